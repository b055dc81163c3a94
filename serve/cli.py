"""The ``zkserve`` command line."""

from __future__ import annotations

import typer

from serve.commands import audit, chain, circuit, demo, scoring, serving

app = typer.Typer(help="zkserve: verifiable inference with EZKL proofs on Ray Serve.", no_args_is_help=True)

# Each module adds its own commands; kept apart so each file has one job.
for _module in (circuit, demo, serving, chain, scoring, audit):
    _module.register(app)

if __name__ == "__main__":
    app()
