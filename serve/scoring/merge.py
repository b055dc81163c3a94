"""Merging committed chunks into the job's results.parquet and errors.csv."""

from __future__ import annotations

import csv
import io

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from serve.files import write_atomically
from serve.scoring.chunks import committed_chunks, table_bytes
from serve.scoring.inputs import RowError
from serve.scoring.layout import JobLayout

RESULT_DROP = ("status", "stage", "reason")


def read_committed(layout: JobLayout) -> pa.Table:
    tables = [pq.read_table(path) for path in committed_chunks(layout)]
    return pa.concat_tables(tables).sort_by("row_id") if tables else pa.table({"row_id": pa.array([], pa.int64())})


def merge_job(layout: JobLayout, input_errors: list[RowError]) -> tuple[pa.Table, list[RowError]]:
    """Writes results.parquet (scored rows, each once, by row id) and errors.csv (every row
    that was not scored, plus scored rows whose outputs disagree with their proof)."""
    committed = read_committed(layout)
    row_ids = committed.column("row_id").to_pylist()
    if len(row_ids) != len(set(row_ids)):
        raise RuntimeError(
            f"{layout.root}: a row was committed twice; the job directory was written by two runs at once"
        )
    if committed.num_rows == 0:
        scored = committed
    else:
        scored = committed.filter(pc.equal(committed.column("status"), "ok")).drop_columns(list(RESULT_DROP))
    errors = list(input_errors) + _stage_errors(committed) + _disagreements(scored)
    errors.sort(key=lambda error: error.row_id)
    scored = _keep_attestation(layout, scored)
    write_atomically(layout.results, table_bytes(scored))
    write_atomically(layout.errors, _errors_csv(errors))
    _remove_orphan_proofs(layout, scored)
    return scored, errors


def _keep_attestation(layout: JobLayout, scored: pa.Table) -> pa.Table:
    """A re-run without --submit keeps the statuses an earlier --submit run recorded."""
    if not layout.results.is_file() or scored.num_rows == 0:
        return scored
    previous = pq.read_table(layout.results)
    if "attestation" not in previous.column_names:
        return scored
    status_of = dict(
        zip(previous.column("proof_id").to_pylist(), previous.column("attestation").to_pylist(), strict=False)
    )
    statuses = [status_of.get(proof_id) for proof_id in scored.column("proof_id").to_pylist()]
    return scored.append_column("attestation", pa.array(statuses, pa.string()))


def _stage_errors(committed: pa.Table) -> list[RowError]:
    if committed.num_rows == 0:
        return []
    failed = committed.filter(pc.equal(committed.column("status"), "error")).to_pylist()
    return [RowError(row["row_id"], row["reason"], stage=row["stage"]) for row in failed]


def _disagreements(scored: pa.Table) -> list[RowError]:
    if "outputs_agree" not in scored.column_names:
        return []
    rows = scored.select(["row_id", "outputs_agree", "max_abs_diff"]).to_pylist()
    return [
        RowError(
            row["row_id"],
            f"ONNX Runtime outputs differ from the proven outputs by {row['max_abs_diff']:.3g}, "
            f"more than the circuit's tolerance",
            stage="check",
        )
        for row in rows
        if row["outputs_agree"] is False
    ]


def _errors_csv(errors: list[RowError]) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["row_id", "line", "stage", "reason"])
    for error in errors:
        writer.writerow([error.row_id, "" if error.line is None else error.line, error.stage, error.reason])
    return text.getvalue().encode()


def _remove_orphan_proofs(layout: JobLayout, scored: pa.Table) -> None:
    """Proofs written by a killed run whose chunk never committed were proven again."""
    if "proof_id" not in scored.column_names:
        return
    referenced = set(scored.column("proof_id").to_pylist())
    for path in layout.proofs.glob("*.json"):
        if path.stem not in referenced:
            path.unlink()
    for leftover in list(layout.proofs.glob(".*.tmp")) + list(layout.chunks.glob(".*.tmp")):
        leftover.unlink()
