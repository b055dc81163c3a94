"""`zkserve compile`: ONNX model -> circuit package."""

from __future__ import annotations

import warnings
from enum import StrEnum
from pathlib import Path

import typer

from circuits import CompileError, CompileOptions, compile_model
from circuits.tune import DEFAULT_MAX_ERROR, Trial, tune_and_compile
from serve.commands.progress import console, stage_progress


def _print_trial(trial: Trial) -> None:
    timing = (
        f"logrows {trial.logrows}, setup {trial.setup_s}s, prove {trial.prove_s}s" if trial.prove_s else trial.error
    )
    console.print(f"  tune {trial.knobs}: {trial.status} ({timing}, max error {trial.max_abs_error})")


class DataVisibility(StrEnum):
    public = "public"
    hashed = "hashed"
    private = "private"


class ParamVisibility(StrEnum):
    fixed = "fixed"
    hashed = "hashed"
    private = "private"


def compile_command(
    model: Path = typer.Argument(..., exists=True, dir_okay=False, help="ONNX model file"),
    name: str = typer.Option(..., "--name", help="name the model is served and registered under"),
    calibration: Path | None = typer.Option(
        None, exists=True, dir_okay=False, help=".npy of input rows (.npz by input name for several inputs)"
    ),
    batch: int = typer.Option(1, min=1, help="rows per proof; a dynamic batch dimension is fixed to this"),
    input_visibility: DataVisibility = typer.Option(DataVisibility.public),
    output_visibility: DataVisibility = typer.Option(DataVisibility.public),
    param_visibility: ParamVisibility = typer.Option(
        ParamVisibility.fixed, help="fixed bakes the weights into the key; private does not bind them"
    ),
    srs: Path | None = typer.Option(None, exists=True, dir_okay=False, help="ceremony SRS file (pinned by sha256)"),
    dev_srs: bool = typer.Option(False, "--dev-srs", help="generate a local SRS: INSECURE, for development (default)"),
    decomp_base: int = typer.Option(CompileOptions.decomp_base, help="EZKL decomposition base"),
    decomp_legs: int = typer.Option(CompileOptions.decomp_legs, help="EZKL decomposition legs"),
    out: Path | None = typer.Option(None, help="package directory (default: the state directory's cache)"),
    tune: bool = typer.Option(False, "--tune", help="search EZKL run args for the fastest circuit within --max-error"),
    max_error: float = typer.Option(DEFAULT_MAX_ERROR, help="--tune: largest output error accepted vs ONNX Runtime"),
) -> None:
    """Compile an ONNX model into a circuit package (settings, keys, Solidity verifier, manifest)."""
    if srs is not None and dev_srs:
        raise typer.BadParameter("--srs and --dev-srs exclude each other")
    options = CompileOptions(batch=batch, input_visibility=input_visibility.value,
                             output_visibility=output_visibility.value, param_visibility=param_visibility.value,
                             decomp_base=decomp_base, decomp_legs=decomp_legs, srs=srs)
    try:
        with warnings.catch_warnings(record=True) as caught, stage_progress(f"compiling {name}") as on_stage:
            warnings.simplefilter("always")
            if tune:
                package = tune_and_compile(model, name, options, calibration=calibration, out_dir=out,
                                           max_error=max_error, on_trial=_print_trial, on_stage=on_stage)
            else:
                package = compile_model(model, name, options, calibration=calibration, out_dir=out, on_stage=on_stage)
    except CompileError as error:
        console.print(f"[red]compile failed:[/red] {error}")
        raise typer.Exit(1) from None
    for warning in caught:
        console.print(f"[yellow]warning:[/yellow] {warning.message}")
    if package.insecure:
        console.print("[yellow]INSECURE:[/yellow] dev SRS generated locally; proofs from this package can be forged "
                      "by whoever generated it. Use --srs with a ceremony file in production.")
    console.print(f"package: {package.root}")
    console.print(f"model_id: {package.model_id}  logrows: {package.manifest['logrows']}  "
                  f"tolerance: {package.tolerance:.3g}")
    typer.echo(package.root)


def register(app: typer.Typer) -> None:
    app.command("compile")(compile_command)
