"""The ``zkserve`` command line."""

from __future__ import annotations

import typer

from serve.chain.keys import take_key_from_environ
from serve.commands import audit, chain, circuit, demo, keys, models, scoring, serving

app = typer.Typer(help="zkserve: verifiable inference with EZKL proofs on Ray Serve.", no_args_is_help=True)

# Each module adds its own commands; kept apart so each file has one job.
for _module in (circuit, demo, serving, models, chain, scoring, keys, audit):
    _module.register(app)


@app.callback()
def _entry() -> None:
    # Before any command starts a child (anvil, node, Ray): only this process holds the signing key.
    take_key_from_environ()

if __name__ == "__main__":
    app()
