"""An audit-sampled scoring job (`zkserve score --sample FRACTION`).

1. infer every row (serve.scoring.infer), committing each input chunk's outputs and leaves;
2. commit to all rows: the Merkle root of every leaf, written to commitment.json (and
   anchored on chain with --submit) before any sample exists;
3. draw the sample from a seed fixed by that commitment (the anchor block's hash, or the
   root with the stated seed) and prove exactly those rows, in proof batches as usual,
   against the committed outputs;
4. merge: results.parquet holds every committed row (outputs, input digest, leaf, and for
   sampled rows their proof), errors.csv every row not scored or whose proof disagrees.

Each step resumes from what the previous run committed; the sample is never redrawn.
"""

from __future__ import annotations

import bisect
import heapq
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.console import Console

from circuits import CircuitPackage
from serve.files import write_atomically
from serve.scoring import cluster
from serve.scoring.chunks import ChunkWriter, committed_batches
from serve.scoring.commitment import (
    LEAF_FORMAT,
    StreamingRoot,
    chainless_seed,
    detection_guarantee,
    input_digest,
    sample_positions,
    sample_size,
)
from serve.scoring.inputs import RowError, iter_chunks
from serve.scoring.layout import JobLayout
from serve.scoring.manifest import JobManifest
from serve.scoring.merge import read_committed
from serve.scoring.model import row_shape
from serve.scoring.progress import scoring_progress
from serve.scoring.screening import domain_check, screen_chunk

PROOF_COLUMNS = ("proof_id", "proof_hash", "proof_batch", "row_index", "max_abs_diff", "outputs_agree")


def rows_chunks(layout: JobLayout) -> list[Path]:
    """The committed row chunks in input order; all of them must be there once inference is complete."""
    done = json.loads(layout.inferred.read_text())
    paths = [layout.rows_chunk(index) for index in range(done["chunks"])]
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        raise RuntimeError(f"{layout.rows}: chunk(s) {', '.join(missing[:5])} are missing; the job directory was "
                           f"changed, start it again in a new --output directory")
    return paths


def _committed_ok(layout: JobLayout, columns: list[str]):
    """Each committed chunk's scored rows (status ok), in order, with `columns`."""
    for path in rows_chunks(layout):
        table = pq.read_table(path, columns=["status", *columns])
        yield table.filter(pc.equal(table.column("status"), "ok")).select(columns)


def commit(layout: JobLayout, package: CircuitPackage, options, console: Console) -> dict:
    """The job's commitment: computed and written once, then only read."""
    if layout.commitment.is_file():
        return json.loads(layout.commitment.read_text())
    root = StreamingRoot()
    for table in _committed_ok(layout, ["leaf"]):
        root.extend(table.column("leaf").to_pylist())
    leaves = root.count
    document = {
        "leaf_format": LEAF_FORMAT,
        "leaves": leaves,
        "model_id": package.model_id,
        "fraction": options.sample,
        "root": None,
        "seed_source": None,
        "seed": None,
        "anchor": None,
    }
    if leaves:
        document["root"] = "0x" + root.root.hex()
        if options.submit:
            from serve.scoring.anchoring import anchor_root

            anchor = anchor_root(root.root, leaves, package.model_id)
            document |= {"anchor": anchor, "seed_source": "anchor_block_hash", "seed": anchor["block_hash"]}
            console.print(f"anchored the job's root {document['root'][:18]}... in block {anchor['block_number']}")
        else:
            document |= {
                "seed_source": "root_and_stated_seed",
                "stated_seed": options.seed,
                "seed": "0x" + chainless_seed(root.root, options.seed).hex(),
            }
        size = sample_size(leaves, options.sample)
        document |= {"sample_size": size, "guarantee": detection_guarantee(leaves, size)}
    write_atomically(layout.commitment, json.dumps(document, indent=2).encode())
    return document


def sample_of(commitment: dict) -> list[int]:
    if not commitment["leaves"]:
        return []
    return sample_positions(bytes.fromhex(commitment["seed"][2:]), commitment["leaves"], commitment["sample_size"])


def _sampled_rows(layout: JobLayout, positions: list[int], output_names: list[str]) -> dict[int, dict]:
    """row_id -> the committed digest and outputs of each sampled row (`positions` sorted)."""
    chosen: dict[int, dict] = {}
    position = 0
    for table in _committed_ok(layout, ["row_id", "input_digest", *output_names]):
        low = bisect.bisect_left(positions, position)
        high = bisect.bisect_left(positions, position + table.num_rows)
        if high > low:
            hits = np.asarray(positions[low:high], dtype=np.int64) - position
            for row in table.take(pa.array(hits)).to_pylist():
                chosen[row["row_id"]] = row
        position += table.num_rows
    return chosen


def plan_sample(layout: JobLayout, package: CircuitPackage, input_path: Path, positions: list[int]) -> list:
    """The sampled rows' proof batches: their inputs read again from the file (and checked against
    the committed digests), their committed outputs to be proven."""
    from serve.scoring.runner import PlannedBatch

    output_names = [entry["name"] for entry in package.outputs]
    chosen = _sampled_rows(layout, positions, output_names)
    order = sorted(chosen)
    inputs: dict[int, np.ndarray] = {}
    for chunk in iter_chunks(input_path, row_shape(package)):
        lo, hi = chunk.first_row, chunk.first_row + chunk.total
        if bisect.bisect_left(order, hi) == bisect.bisect_left(order, lo):
            continue  # no sampled row in this chunk
        for index in np.flatnonzero(np.isin(chunk.row_ids, order)):
            inputs[int(chunk.row_ids[index])] = chunk.values[index]
    for row_id in order:
        if row_id not in inputs or input_digest(inputs[row_id]) != chosen[row_id]["input_digest"]:
            raise RuntimeError(
                f"row {row_id} of the input differs from the row committed; the input file changed during the job"
            )
    shapes = [entry["shape"][1:] for entry in package.outputs]
    batches = []
    size = package.batch_size
    for number, start in enumerate(range(0, len(order), size)):
        ids = order[start : start + size]
        outputs = [
            np.asarray([chosen[r][name] for r in ids], dtype=np.float64).reshape(len(ids), *shape)
            for name, shape in zip(output_names, shapes, strict=False)
        ]
        batches.append(
            PlannedBatch(number, np.asarray(ids, dtype=np.int64), np.stack([inputs[r] for r in ids]), outputs)
        )
    return batches


def score_sampled(
    package: CircuitPackage,
    layout: JobLayout,
    manifest: JobManifest,
    job_id: str,
    input_path: Path,
    options,
    resumed: bool,
    console: Console,
):
    from serve.scoring.infer import infer_all
    from serve.scoring.runner import WINDOW_BATCHES, ScoreSummary, run_pipeline
    from serve.scoring.shipping import PackageSource

    output_names = [entry["name"] for entry in package.outputs]
    if resumed:
        console.print(f"resuming {layout.root}")
    check = domain_check(package)
    cluster.connect()
    pool = None
    with scoring_progress(None, 0, options.progress, console) as progress:
        inferred = infer_all(
            layout,
            PackageSource.publish(package),
            input_path,
            row_shape(package),
            output_names,
            lambda chunk: screen_chunk(check, chunk),
            options.inferencers,
            progress,
        )
        commitment = commit(layout, package, options, console)
        positions = sample_of(commitment)
        done = committed_batches(layout)
        batches = plan_sample(layout, package, input_path, positions) if positions else []
        pending = [batch for batch in batches if batch.batch_id not in done]
        writer = ChunkWriter(layout, output_names, options.chunk_rows, options.flush_s)
        for start in range(0, len(pending), WINDOW_BATCHES):
            pool = run_pipeline(package, job_id, pending[start : start + WINDOW_BATCHES], options, writer, progress)
    counts = merge_sampled(layout, output_names)
    audit = {
        key: commitment.get(key)
        for key in (
            "root",
            "leaf_format",
            "leaves",
            "fraction",
            "sample_size",
            "seed_source",
            "seed",
            "stated_seed",
            "anchor",
            "guarantee",
        )
    }
    summary = ScoreSummary(
        directory=str(layout.root),
        model_id=package.model_id,
        rows_total=inferred.rows_total,
        rows_scored=counts["rows"],
        rows_failed=counts["failed"],
        proofs=counts["proofs"],
        resumed=resumed,
        rows_this_run=progress.rows,
        seconds_this_run=round(progress.elapsed_s, 3),
        rows_per_s=round(progress.rows / max(progress.elapsed_s, 1e-9), 3),
        proofs_per_s=round(progress.proofs / max(progress.elapsed_s, 1e-9), 3),
        steady_rows_per_s=round(progress.steady_rows_per_s, 3),
        provers=pool.provers if pool else 0,
        prover_threads=pool.threads if pool else 0,
        audit=audit,
    )
    if options.submit and counts["proofs"]:
        summary.attestation = submit_sampled(layout, package.model_id, options)
    return summary


def merge_sampled(layout: JobLayout, output_names: list[str]) -> dict:
    """Streams every committed row into results.parquet, joined with the sampled rows' proofs,
    and every unscored or disagreeing row into errors.csv. Returns counts."""
    from serve.scoring.merge import RESULT_DROP, _errors_csv

    proven = read_committed(layout)
    by_row: dict[int, dict] = {}
    late_errors: list[RowError] = []
    for row in proven.to_pylist() if proven.num_rows else []:
        if row["status"] == "ok":
            by_row[row["row_id"]] = row
            if row["outputs_agree"] is False:
                late_errors.append(
                    RowError(
                        row["row_id"],
                        f"committed outputs differ from the proven outputs by "
                        f"{row['max_abs_diff']:.3g}, more than the circuit's "
                        f"tolerance",
                        stage="check",
                    )
                )
        else:
            late_errors.append(RowError(row["row_id"], row["reason"], stage=row["stage"]))
    late_errors.sort(key=lambda error: error.row_id)
    proof_types = {
        "proof_id": pa.string(),
        "proof_hash": pa.string(),
        "proof_batch": pa.int64(),
        "row_index": pa.int64(),
        "max_abs_diff": pa.float64(),
        "outputs_agree": pa.bool_(),
    }
    schema = pa.schema(
        [
            ("row_id", pa.int64()),
            *[(name, pa.list_(pa.float64())) for name in output_names],
            ("input_digest", pa.binary(32)),
            ("leaf", pa.binary(32)),
            ("sampled", pa.bool_()),
            *proof_types.items(),
        ]
    )
    proven_rows = pa.Table.from_pylist(
        sorted(({name: row[name] for name in ("row_id", *proof_types)} for row in by_row.values()),
               key=lambda row: row["row_id"]),
        schema=pa.schema([("row_id", pa.int64()), *proof_types.items()]),
    )
    proven_ids = proven_rows.column("row_id").to_numpy()
    temporary = layout.results.with_name(f".{layout.results.name}.{os.getpid()}.tmp")
    rows = 0
    early_errors: list[RowError] = []
    with pq.ParquetWriter(temporary, schema) as out:
        for path in rows_chunks(layout):
            table = pq.read_table(path)
            failed = table.filter(pc.equal(table.column("status"), "error"))
            early_errors += [
                RowError(r["row_id"], r["reason"], r["line"], r["stage"])
                for r in failed.select(["row_id", "reason", "line", "stage"]).to_pylist()
            ]
            ok = table.filter(pc.equal(table.column("status"), "ok")).drop_columns(["line", *RESULT_DROP])
            ids = ok.column("row_id").to_numpy()
            where = np.minimum(np.searchsorted(proven_ids, ids), max(len(proven_ids) - 1, 0))
            sampled = proven_ids[where] == ids if len(proven_ids) else np.zeros(len(ids), bool)
            ok = ok.append_column("sampled", pa.array(sampled, pa.bool_()))
            index = pa.array(where, pa.int64(), mask=~sampled)  # null where the row has no proof: take gives null
            for name, kind in proof_types.items():
                column = proven_rows.column(name).take(index) if len(proven_ids) else pa.nulls(len(ids), kind)
                ok = ok.append_column(name, column)
            out.write_table(ok.select(schema.names).cast(schema))
            rows += ok.num_rows
    os.replace(temporary, layout.results)
    errors = list(heapq.merge(early_errors, late_errors, key=lambda error: error.row_id))
    write_atomically(layout.errors, _errors_csv(errors))
    referenced = {row["proof_id"] for row in by_row.values()}
    for path in layout.proofs.glob("*.json"):
        if path.stem not in referenced:
            path.unlink()
    return {"rows": rows, "failed": len({error.row_id for error in errors}), "proofs": len(referenced - {None})}


def submit_sampled(layout: JobLayout, model_id: str, options) -> dict:
    """The sampled proofs to the verifier service; statuses go to attestations.json (results.parquet,
    which may hold millions of rows, is not rewritten)."""
    from serve.scoring.attestation import submit_proofs

    proof_ids = sorted(path.stem for path in layout.proofs.glob("*.json"))
    statuses = submit_proofs(layout, proof_ids, model_id, options.verifier, options.submit_timeout_s)
    write_atomically(layout.attestations, json.dumps(statuses, indent=2).encode())
    values = list(statuses.values())
    return {status: values.count(status) for status in sorted(set(values), key=str)}
