"""`zkserve score`: score a whole data set with a proof for every row, on Ray."""

from __future__ import annotations

from pathlib import Path

import typer

from circuits import CompileError, PackageError
from serve.commands.progress import console


def _verifier_address() -> str:
    from serve.config import load_config

    verifier = load_config()["zkserve"]["verifier"]
    return f"{verifier['host']}:{verifier['port']}"


def _resources(entries: list[str]) -> dict[str, float]:
    resources = {}
    for entry in entries:
        name, _, amount = entry.partition("=")
        try:
            resources[name.strip()] = float(amount)
        except ValueError:
            raise typer.BadParameter(f"--prover-resource takes NAME=AMOUNT, not {entry!r}") from None
        if not name.strip() or resources[name.strip()] <= 0:
            raise typer.BadParameter(f"--prover-resource takes NAME=AMOUNT with AMOUNT > 0, not {entry!r}")
    return resources


def score_command(
    model: str = typer.Argument(..., help="demo model name (demo-mlp, demo-cnn) or a circuit package directory"),
    input: Path = typer.Option(..., "--input", "-i", help="rows to score: .npy, .csv or .parquet"),
    output: Path = typer.Option(..., "--output", "-o", help="job directory: results.parquet, errors.csv, proofs/"),
    attest: bool = typer.Option(True, "--attest/--no-attest", help="prove every row (default) or only run the model"),
    proof_batch: int | None = typer.Option(
        None, "--proof-batch", min=1, help="rows per proof (demo models are compiled for it; default 1)"
    ),
    submit: bool = typer.Option(
        False, "--submit", help="send every proof to the verifier service and wait for its status"
    ),
    verifier: str | None = typer.Option(None, help="verifier service host:port (default: from the config)"),
    submit_timeout: float = typer.Option(120.0, help="seconds to wait for attestations to become final"),
    provers: int | None = typer.Option(None, min=1, help="prover actors (default: cluster CPUs / --prover-threads)"),
    prover_threads: int | None = typer.Option(None, min=1, help="RAYON_NUM_THREADS of each prover (default 1)"),
    prover_resource: list[str] = typer.Option(
        [], "--prover-resource", help="NAME=AMOUNT of a Ray custom resource each prover needs, e.g. to place "
        "provers on the nodes that offer it (repeatable)"
    ),
    chunk_rows: int = typer.Option(256, min=1, help="rows per committed chunk file"),
    sample: float | None = typer.Option(
        None,
        "--sample",
        min=0.0,
        max=1.0,
        help="audit-sampled job: infer every row, commit to all rows with a Merkle "
        "root, then prove only this fraction, drawn from a seed fixed after "
        "the commitment (anchored on chain with --submit)",
    ),
    seed: str = typer.Option("0", "--seed", help="stated seed of a chain-less sampled job, mixed with the root"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Score every row of INPUT with MODEL on Ray, proving each row; resumable after an interruption."""
    from serve.scoring import ScoreOptions, score
    from serve.scoring.anchoring import AnchorError
    from serve.scoring.attestation import SubmitError
    from serve.scoring.inputs import InputFileError
    from serve.scoring.manifest import JobMismatch
    from serve.scoring.model import ModelError

    options = ScoreOptions(
        model=model,
        input=input,
        output=output,
        attest=attest,
        proof_batch=proof_batch,
        submit=submit,
        verifier=verifier or (_verifier_address() if submit else ""),
        submit_timeout_s=submit_timeout,
        provers=provers,
        prover_threads=prover_threads,
        prover_resources=_resources(prover_resource),
        chunk_rows=chunk_rows,
        progress=progress,
        sample=sample,
        seed=seed,
    )
    try:
        summary = score(options, console)
    except (
        JobMismatch,
        ModelError,
        InputFileError,
        PackageError,
        CompileError,
        SubmitError,
        AnchorError,
        ValueError,
    ) as error:
        console.print(f"[red]score failed:[/red] {error}")
        raise typer.Exit(2 if isinstance(error, JobMismatch) else 1) from None
    console.print(
        f"scored {summary.rows_scored} of {summary.rows_total} rows with {summary.proofs} proofs "
        f"({summary.rows_per_s:.1f} rows/s, {summary.proofs_per_s:.2f} proofs/s this run); "
        f"{summary.rows_failed} row(s) in {Path(summary.directory) / 'errors.csv'}"
    )
    if summary.audit and summary.audit.get("root"):
        audit = summary.audit
        console.print(
            f"audit: root {audit['root']} over {audit['leaves']} rows; {audit['sample_size']} rows proven "
            f"(seed: {audit['seed_source']})"
        )
        console.print("  " + audit["guarantee"]["statement"])
    if summary.attestation:
        console.print("attestation: " + ", ".join(f"{status}={count}" for status, count in summary.attestation.items()))
    typer.echo(Path(summary.directory) / "results.parquet")


def register(app: typer.Typer) -> None:
    app.command("score")(score_command)
