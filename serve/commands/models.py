"""`zkserve models add|remove|list`: change the served models of a running `zkserve up`.

The ingress is never redeployed (it serves gRPC and REST itself): see ``serve.app.live``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from serve.commands.progress import console, stage_progress

models_app = typer.Typer(help="Add, update or remove a served model on a running `zkserve up`.",
                         no_args_is_help=True)

CONFIG = typer.Option(None, "--config", exists=True, dir_okay=False, help="YAML config `zkserve up` runs with")
TIMEOUT = typer.Option(600.0, "--timeout", min=1.0,
                       help="seconds to wait for the proofs in flight of a removed or replaced version")


def _settings(config: Path | None):
    from serve.commands.serving import _settings as load

    settings = load(config)
    settings.export()  # the compile cache and the package copies go to up's state directory
    return settings


def _connected(config: Path | None, settings=None):
    from serve.app import live

    settings = settings or _settings(config)
    try:
        live.connect(settings)
    except live.LiveModelError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from None
    return settings


def _package(source: Path, name: str | None, batch: int | None, calibration: Path | None):
    """A circuit package directory as it is, or an ONNX file compiled first (as `zkserve compile`)."""
    from circuits import CircuitPackage, CompileError, CompileOptions, PackageError, compile_model

    if source.is_dir():
        try:
            return CircuitPackage.load(source)
        except PackageError as error:
            raise typer.BadParameter(f"{source} is not a usable circuit package: {error}") from None
    if source.suffix != ".onnx":
        raise typer.BadParameter(f"{source} is neither a circuit package directory nor an .onnx file")
    if not name:
        raise typer.BadParameter("an ONNX model needs --name (the name it is served and registered under)")
    try:
        with stage_progress(f"compiling {name}") as on_stage:
            return compile_model(source, name, CompileOptions(batch=batch), calibration=calibration,
                                 on_stage=on_stage)
    except CompileError as error:
        console.print(f"[red]compile failed:[/red] {error}")
        raise typer.Exit(1) from None


@models_app.command("add")
def add_command(
    source: Path = typer.Argument(..., exists=True, help="circuit package directory, or an ONNX model to compile"),
    name: str | None = typer.Option(None, "--name", help="serve under this name (default: the package's)"),
    batch: int | None = typer.Option(None, min=1, help="ONNX only: rows per proof"),
    calibration: Path | None = typer.Option(None, exists=True, dir_okay=False,
                                            help="ONNX only: .npy of input rows (.npz by input name)"),
    timeout: float = TIMEOUT,
    config: Path | None = CONFIG,
) -> None:
    """Serve a model on the running app; a served name with another model_id becomes its next version."""
    from serve.app import live

    settings = _settings(config)
    package = _package(source, name, batch, calibration)
    settings = _connected(config, settings)
    try:
        added = live.add(settings, package, name, timeout)
    except live.LiveModelError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from None
    if added.get("unchanged"):
        console.print(f"{added['name']} already serves {added['model_id']} (version {added['version']})")
        return
    replaced = added.get("replaced_model_id")
    note = f", replacing {replaced} ({added['replaced_proofs']} proof(s) finished first)" if replaced else ""
    registered = "registered on chain, " if settings.verifier.enabled else ""
    console.print(f"{registered}serving {added['name']} version {added['version']} ({added['model_id']}){note}")


@models_app.command("remove")
def remove_command(
    name: str = typer.Argument(..., help="served model name"),
    timeout: float = TIMEOUT,
    config: Path | None = CONFIG,
) -> None:
    """Stop serving a model: it answers NOT_FOUND at once; its proofs in flight finish first."""
    from serve.app import live

    settings = _connected(config)
    try:
        removed = live.remove(settings, name, timeout)
    except live.LiveModelError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from None
    for entry in removed:
        console.print(f"removed {name} version {entry['version'] or '?'} ({entry['model_id']}) after "
                      f"{entry['proofs_waited']} proof(s) in flight finished")


@models_app.command("list")
def list_command(config: Path | None = CONFIG) -> None:
    """The models of the running app: name, version, model_id, state, proofs not yet finished."""
    from serve.app import live

    settings = _connected(config)
    try:
        entries = live.table(live.ingress(settings))
    except live.LiveModelError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from None
    print(f"{'name':<20} {'version':<8} {'state':<12} {'unfinished':<10} model_id")
    for e in entries:
        print(f"{e['name']:<20} {e['version']:<8} {e['state']:<12} {e['proofs_unfinished']:<10} {e['model_id']}")


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
