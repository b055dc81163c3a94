"""One scoring job: stream the rows, plan proof batches, run the Ray Data pipeline on the
batches not yet committed (a bounded window at a time), merge, optionally submit. With
`sample`, an audit-sampled job instead (serve.scoring.sampled). Re-running resumes a job."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console

from circuits.hashing import sha256_file
from serve.files import write_atomically
from serve.scoring import cluster
from serve.scoring.chunks import ChunkWriter, committed_batches
from serve.scoring.inputs import RowError, iter_chunks
from serve.scoring.layout import JobLayout
from serve.scoring.manifest import JobManifest, JobMismatch, open_job
from serve.scoring.merge import merge_job
from serve.scoring.model import resolve_package, row_shape
from serve.scoring.payload import pack
from serve.scoring.progress import scoring_progress
from serve.scoring.screening import domain_check, screen_chunk

MAX_BLOCKS = 4096  # Ray Data blocks: one proof batch each up to this many, so provers share work evenly
WINDOW_BATCHES = 2048  # proof batches per pipeline run: what the driver holds at once


@dataclass
class ScoreOptions:
    model: str
    input: Path
    output: Path
    attest: bool = True
    proof_batch: int | None = None
    submit: bool = False
    verifier: str = "127.0.0.1:9100"
    submit_timeout_s: float = 120.0
    provers: int | None = None
    prover_threads: int | None = None
    chunk_rows: int = 256
    flush_s: float = 5.0
    progress: bool = True
    sample: float | None = None  # prove this fraction of the rows, drawn after committing to all of them
    seed: str = "0"  # stated seed of a chain-less sampled job (mixed with the root)
    inferencers: int = 1  # inference actors of a sampled job
    prover_resources: dict[str, float] = field(default_factory=dict)  # Ray custom resources each prover needs


@dataclass
class ScoreSummary:
    directory: str
    model_id: str
    rows_total: int
    rows_scored: int
    rows_failed: int
    proofs: int
    resumed: bool
    rows_this_run: int
    seconds_this_run: float
    rows_per_s: float
    proofs_per_s: float
    steady_rows_per_s: float  # after start-up: first result to last
    provers: int = 0
    prover_threads: int = 0
    attestation: dict = field(default_factory=dict)
    audit: dict | None = None  # a sampled job's commitment, seed, sample and detection guarantee


@dataclass(frozen=True)
class PlannedBatch:
    batch_id: int
    row_ids: np.ndarray
    values: np.ndarray
    outputs: list[np.ndarray] | None = None  # committed outputs (sampled jobs); None: infer in the pipeline


def plan_stream(chunks, proof_batch: int, screen, errors: list[RowError], totals: list[int]):
    """Good rows in file order, `proof_batch` per proof: the same plan on every run, made while
    reading. Bad and refused rows go to `errors`; totals[0] counts every data row seen."""
    ids: list[np.ndarray] = []
    values: list[np.ndarray] = []
    held = number = 0
    for chunk in chunks:
        totals[0] += chunk.total
        row_ids, rows, _, refused = screen(chunk)
        errors.extend(refused)
        ids.append(row_ids)
        values.append(rows)
        held += len(row_ids)
        if held < proof_batch:
            continue
        all_ids, all_values = np.concatenate(ids), np.concatenate(values)
        whole = len(all_ids) // proof_batch * proof_batch
        for start in range(0, whole, proof_batch):
            yield PlannedBatch(number, all_ids[start:start + proof_batch], all_values[start:start + proof_batch])
            number += 1
        ids, values, held = [all_ids[whole:]], [all_values[whole:]], len(all_ids) - whole
    if held:
        yield PlannedBatch(number, np.concatenate(ids), np.concatenate(values))


def job_id_of(manifest: JobManifest) -> str:
    return hashlib.sha256(json.dumps(manifest.compared(), sort_keys=True).encode()).hexdigest()[:12]


@contextlib.contextmanager
def job_lock(layout: JobLayout) -> Iterator[None]:
    """One run per job directory; the kernel drops the lock when a run dies, even by kill -9."""
    layout.root.mkdir(parents=True, exist_ok=True)
    with open(layout.root / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JobMismatch(f"{layout.root} is being scored by another running process") from None
        yield


def score(options: ScoreOptions, console: Console | None = None) -> ScoreSummary:
    console = console or Console(stderr=True)
    if options.sample is not None and not 0 < options.sample <= 1:
        raise ValueError(f"--sample must be a fraction in (0, 1], not {options.sample}")
    if options.sample is not None and not options.attest:
        raise ValueError("--sample proves a sample of the rows; it cannot be combined with --no-attest")
    package = resolve_package(options.model, options.proof_batch)
    layout = JobLayout(Path(options.output).resolve())
    input_path = Path(options.input).resolve()
    if not input_path.is_file():
        from serve.scoring.inputs import InputFileError

        raise InputFileError(f"input file {input_path} does not exist")
    manifest = JobManifest(options.model, package.model_id, str(input_path), sha256_file(input_path),
                           package.batch_size, options.attest, options.sample,
                           options.seed if options.sample is not None else None)
    with job_lock(layout):
        resumed = open_job(layout, manifest)
        if options.sample is not None:
            from serve.scoring.sampled import score_sampled

            summary = score_sampled(package, layout, manifest, job_id_of(manifest), input_path, options, resumed,
                                    console)
        else:
            summary = _score_every_row(package, layout, manifest, input_path, options, resumed, console)
        write_atomically(layout.summary, json.dumps(asdict(summary), indent=2).encode())
        return summary


def _score_every_row(package, layout: JobLayout, manifest: JobManifest, input_path: Path, options: ScoreOptions,
                     resumed: bool, console: Console) -> ScoreSummary:
    done = committed_batches(layout)
    if resumed:
        console.print(f"resuming {layout.root}: {len(done)} proof batches already committed")
    check = domain_check(package) if options.attest else None
    writer = ChunkWriter(layout, [entry["name"] for entry in package.outputs], options.chunk_rows, options.flush_s)
    input_errors: list[RowError] = []
    totals = [0]
    pool = None
    with scoring_progress(None, 0, options.progress, console) as progress:
        window: list[PlannedBatch] = []
        batches = plan_stream(iter_chunks(input_path, row_shape(package)), package.batch_size,
                              lambda chunk: screen_chunk(check, chunk), input_errors, totals)
        for batch in batches:
            if batch.batch_id in done:
                continue
            window.append(batch)
            if len(window) >= WINDOW_BATCHES:
                pool = run_pipeline(package, job_id_of(manifest), window, options, writer, progress)
                window = []
        if window:
            pool = run_pipeline(package, job_id_of(manifest), window, options, writer, progress)
    scored, errors = merge_job(layout, input_errors)
    summary = ScoreSummary(
        directory=str(layout.root), model_id=package.model_id, rows_total=totals[0], rows_scored=scored.num_rows,
        rows_failed=len({error.row_id for error in errors}),
        proofs=len(set(scored.column("proof_id").to_pylist()) - {None}) if scored.num_rows else 0,
        resumed=resumed, rows_this_run=progress.rows, seconds_this_run=round(progress.elapsed_s, 3),
        rows_per_s=round(progress.rows / max(progress.elapsed_s, 1e-9), 3),
        proofs_per_s=round(progress.proofs / max(progress.elapsed_s, 1e-9), 3),
        steady_rows_per_s=round(progress.steady_rows_per_s, 3),
        provers=pool.provers if pool else 0, prover_threads=pool.threads if pool else 0)
    if options.submit and options.attest and scored.num_rows:
        from serve.scoring.attestation import submit_job

        attested = submit_job(layout, scored, package.model_id, options.verifier, options.submit_timeout_s)
        statuses = attested.column("attestation").to_pylist()
        summary.attestation = {status: statuses.count(status) for status in sorted(set(statuses), key=str)}
    return summary


def run_pipeline(package, job_id: str, pending: list[PlannedBatch], options: ScoreOptions, writer: ChunkWriter,
                 progress) -> cluster.ProverPool:
    """Proves `pending` on Ray Data and commits their results through `writer`. Batches that
    carry committed outputs skip the inference stage."""
    import ray

    from serve.scoring.shipping import PackageSource
    from serve.scoring.stages import InferenceStage, ProvingStage

    cluster.connect()
    pool = cluster.size_pool(options.provers, options.prover_threads, len(pending))
    source = PackageSource.publish(package)
    infer = pending[0].outputs is None
    records = [{"batch_id": batch.batch_id, "payload": pack(row_ids=batch.row_ids, inputs=batch.values),
                **({} if infer else {"outputs": pack(**{f"out{i}": out for i, out in enumerate(batch.outputs)}),
                                     "error": ""})}
               for batch in pending]
    dataset = ray.data.from_items(records, override_num_blocks=min(len(records), MAX_BLOCKS))
    if infer:
        # Inference is cheap next to proving: one actor, no reserved CPU, one ORT thread (a GPU share if any).
        gpu_share = 0.25 if ray.cluster_resources().get("GPU") else None
        dataset = dataset.map_batches(InferenceStage, fn_constructor_args=(source,), batch_size=1,
                                      batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=1), num_cpus=0,
                                      num_gpus=gpu_share)
    dataset = dataset.map_batches(
        ProvingStage, fn_constructor_args=(source, job_id, options.attest), batch_size=1, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=pool.provers, max_tasks_in_flight_per_actor=2),
        num_cpus=pool.threads, runtime_env=pool.runtime_env, resources=options.prover_resources or None)
    try:
        for block in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for raw in block["result"]:
                result = json.loads(raw)
                writer.add(result)
                progress.advance(sum(len(p["rows"]) for p in result["proofs"]) + len(result["errors"]),
                                 sum(1 for p in result["proofs"] if p.get("proof")))
            if writer.due():
                writer.flush()
    finally:  # Ctrl-C or a failed stage: keep the batches that did finish
        writer.flush()
    return pool
