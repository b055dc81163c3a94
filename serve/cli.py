"""The ``zkserve`` command line."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(help="zkserve: verifiable inference with EZKL proofs on Ray Serve.", no_args_is_help=True)

# Each module adds its own commands; kept apart so each file has one job.
_COMMAND_MODULES = ("circuit", "demo", "chain", "serving")

for _name in _COMMAND_MODULES:
    try:
        _module = importlib.import_module(f"serve.commands.{_name}")
    except ModuleNotFoundError as error:
        if error.name != f"serve.commands.{_name}":
            raise
        continue
    _module.register(app)

if __name__ == "__main__":
    app()
