"""`zkserve compile`: ONNX model -> circuit package."""

from __future__ import annotations

import warnings
from enum import StrEnum
from pathlib import Path

import typer

from circuits import CompileError, CompileOptions, compile_model
from circuits.domain import DEFAULT_MARGIN, DomainError, parse_range
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
    batch: int | None = typer.Option(
        None,
        min=1,
        help="rows per proof; a dynamic batch dimension is fixed to this (default: the model's fixed batch, else 1)",
    ),
    input_visibility: DataVisibility = typer.Option(DataVisibility.public),
    output_visibility: DataVisibility = typer.Option(DataVisibility.public),
    param_visibility: ParamVisibility = typer.Option(
        ParamVisibility.fixed, help="fixed bakes the weights into the key; private does not bind them"
    ),
    srs: Path | None = typer.Option(
        None,
        exists=True,
        dir_okay=False,
        help="SRS file, pinned by sha256; counts as a ceremony SRS only when its "
        "sha256 is a known ceremony file's (srs.trusted_sha256), else "
        "'unverified' and insecure",
    ),
    dev_srs: bool = typer.Option(False, "--dev-srs", help="generate a local SRS: INSECURE, for development (default)"),
    decomp_base: int = typer.Option(CompileOptions.decomp_base, help="EZKL decomposition base"),
    decomp_legs: int = typer.Option(CompileOptions.decomp_legs, help="EZKL decomposition legs"),
    out: Path | None = typer.Option(None, help="package directory (default: the state directory's cache)"),
    input_range: str | None = typer.Option(
        None,
        "--input-range",
        metavar="LO:HI",
        help="proven input domain for every feature (default: the calibration rows widened by --domain-margin)",
    ),
    input_ranges: Path | None = typer.Option(
        None,
        "--input-ranges",
        exists=True,
        dir_okay=False,
        help="per-feature domain: JSON {input: {low: [...], high: [...]}} or .npy shaped [2, *row_shape]",
    ),
    domain_margin: float = typer.Option(
        DEFAULT_MARGIN, min=0.0, help="widen the calibration domain by this fraction of each feature's span"
    ),
    domain_max_error: float | None = typer.Option(
        None, help="largest output error accepted anywhere in the domain (default: 1 percent of the outputs' span)"
    ),
    tune: bool = typer.Option(False, "--tune", help="search EZKL run args for the fastest circuit within --max-error"),
    max_error: float = typer.Option(DEFAULT_MAX_ERROR, help="--tune: largest output error accepted vs ONNX Runtime"),
) -> None:
    """Compile an ONNX model into a circuit package (settings, keys, Solidity verifier, manifest)."""
    if srs is not None and dev_srs:
        raise typer.BadParameter("--srs and --dev-srs exclude each other")
    try:
        bounds = parse_range(input_range) if input_range is not None else None
    except DomainError as error:
        raise typer.BadParameter(str(error), param_hint="--input-range") from None
    options = CompileOptions(
        batch=batch,
        input_visibility=input_visibility.value,
        output_visibility=output_visibility.value,
        param_visibility=param_visibility.value,
        decomp_base=decomp_base,
        decomp_legs=decomp_legs,
        srs=srs,
        input_range=bounds,
        input_ranges_file=input_ranges,
        domain_margin=domain_margin,
        domain_max_error=domain_max_error,
    )
    try:
        with warnings.catch_warnings(record=True) as caught, stage_progress(f"compiling {name}") as on_stage:
            warnings.simplefilter("always")
            if tune:
                package = tune_and_compile(
                    model,
                    name,
                    options,
                    calibration=calibration,
                    out_dir=out,
                    max_error=max_error,
                    on_trial=_print_trial,
                    on_stage=on_stage,
                )
            else:
                package = compile_model(model, name, options, calibration=calibration, out_dir=out, on_stage=on_stage)
    except CompileError as error:
        console.print(f"[red]compile failed:[/red] {error}")
        raise typer.Exit(1) from None
    for warning in caught:
        console.print(f"[yellow]warning:[/yellow] {warning.message}")
    if package.insecure:
        console.print(
            f"[yellow]INSECURE ({package.srs_status} SRS):[/yellow] {package.srs_note}. "
            "Proofs from this package can be forged by whoever made the SRS."
        )
    upgrade = package.manifest.get("opset_upgrade")
    if upgrade:
        console.print(
            f"upgraded the model from opset {upgrade['from']} to {upgrade['to']} (ONNX Runtime: {upgrade['reason']})"
        )
    console.print(f"package: {package.root}")
    console.print(
        f"model_id: {package.model_id}  logrows: {package.manifest['logrows']}  tolerance: {package.tolerance:.3g}"
    )
    check = package.manifest["domain_check"]
    console.print(
        f"input domain: {package.input_domain.describe()}; worst error on {check['points']} domain "
        f"points {check['max_abs_error']:.3g}"
    )
    typer.echo(package.root)


def register(app: typer.Typer) -> None:
    app.command("compile")(compile_command)
