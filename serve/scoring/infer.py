"""Inferring every row of a file on Ray, chunk by chunk, with each row's Merkle leaf.

The driver streams input chunks to a few inference actors, keeping at most two chunks per
actor in flight, and commits each finished chunk as one Parquet file (atomic rename): a
killed run resumes at the first chunk not committed. Memory on the driver is a few chunks.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import ray

from serve.files import write_atomically
from serve.scoring.chunks import table_bytes
from serve.scoring.commitment import input_digests, row_leaves
from serve.scoring.inputs import RowError, iter_chunks
from serve.scoring.layout import JobLayout
from serve.scoring.shipping import PackageSource

IN_FLIGHT_PER_ACTOR = 2


def run_model(session, rows: np.ndarray) -> list[np.ndarray]:
    """ONNX Runtime outputs (float64) for `rows`, in slices of the model's fixed batch size if it has one."""
    spec = session.get_inputs()[0]
    fixed = spec.shape[0] if isinstance(spec.shape[0], int) else None
    step = fixed or max(1, len(rows))
    parts: list[list[np.ndarray]] = []
    for start in range(0, len(rows), step):
        feed = rows[start:start + step].astype(np.float32)
        count = len(feed)
        if fixed and fixed > count:  # pad to the fixed batch, then drop the padding
            feed = np.concatenate([feed, np.zeros((fixed - count, *feed.shape[1:]), np.float32)])
        parts.append([np.asarray(out)[:count].astype(np.float64) for out in session.run(None, {spec.name: feed})])
    return [np.concatenate([part[i] for part in parts]) for i in range(len(parts[0]))] if parts else []


class RowInferencer:
    """One ONNX Runtime session; returns outputs, input digests and leaves of a chunk."""

    def __init__(self, source: PackageSource):
        from serve.app.runtime import create_session

        package = source.load()
        self.session = create_session(str(package.onnx_path), use_gpu=bool(ray.get_gpu_ids()), threads=1)

    def infer(self, row_ids: np.ndarray, values: np.ndarray) -> dict:
        """outputs: one [n, ...] array per model output; digests, leaves: n x 32 bytes each."""
        if not len(row_ids):
            return {"outputs": [], "digests": b"", "leaves": b"", "error": ""}
        try:
            outputs = run_model(self.session, values)
        except Exception as error:  # noqa: BLE001 - the chunk's rows are reported, the job goes on
            return {"outputs": [], "digests": b"", "leaves": b"", "error": f"inference failed: {error}"[:500]}
        digests = input_digests(values)
        return {"outputs": outputs, "digests": digests, "leaves": row_leaves(row_ids, digests, outputs), "error": ""}


def rows_schema(output_names: list[str]) -> pa.Schema:
    return pa.schema([
        ("row_id", pa.int64()), ("line", pa.int64()), ("status", pa.string()), ("stage", pa.string()),
        ("reason", pa.string()), ("input_digest", pa.binary(32)), ("leaf", pa.binary(32)),
        *[(name, pa.list_(pa.float64())) for name in output_names],
    ])


@dataclass
class InferenceRun:
    rows_total: int
    chunks: int
    rows_this_run: int


def infer_all(layout: JobLayout, source: PackageSource, input_path, row_shape: list[int], output_names: list[str],
              screen, actors: int, progress) -> InferenceRun:
    """Infers every chunk not yet committed; `screen(chunk)` returns (row_ids, values, lines, errors)
    of the rows to score (serve.scoring.screening). Writes layout.inferred at the end."""
    if layout.inferred.is_file():
        done = json.loads(layout.inferred.read_text())
        return InferenceRun(done["rows_total"], done["chunks"], 0)
    committed = {int(path.stem.split("-")[1]) for path in layout.rows.glob("rows-*.parquet")}
    remote = ray.remote(RowInferencer)
    gpu = 0.25 if ray.cluster_resources().get("GPU") else 0
    pool = [remote.options(num_cpus=1, num_gpus=gpu).remote(source) for _ in range(max(1, actors))]
    schema = rows_schema(output_names)
    in_flight: deque = deque()
    total = chunks = this_run = 0

    def commit_oldest() -> None:
        nonlocal this_run
        index, row_ids, errors, ref = in_flight.popleft()
        result = ray.get(ref)
        write_atomically(layout.rows_chunk(index), table_bytes(_chunk_table(schema, output_names, row_ids, errors,
                                                                            result)))
        this_run += len(row_ids) + len(errors)
        progress.advance(len(row_ids) + len(errors), 0)

    try:
        for chunk in iter_chunks(input_path, row_shape):
            total += chunk.total
            chunks += 1
            if chunk.index in committed:
                continue
            row_ids, values, _, errors = screen(chunk)
            ref = pool[chunk.index % len(pool)].infer.remote(row_ids, values)
            in_flight.append((chunk.index, row_ids, errors, ref))
            while len(in_flight) >= IN_FLIGHT_PER_ACTOR * len(pool):
                commit_oldest()
        while in_flight:
            commit_oldest()
    finally:
        for actor in pool:
            ray.kill(actor)
    write_atomically(layout.inferred, json.dumps({"rows_total": total, "chunks": chunks}).encode())
    return InferenceRun(total, chunks, this_run)


def hashes_array(blob: bytes, count: int) -> pa.Array:
    """n x 32 bytes as a binary(32) column, without a Python object per row."""
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(32), count, [None, pa.py_buffer(blob)])


def list_array(values: np.ndarray, count: int) -> pa.Array:
    """An [n, ...] array as a list<float64> column of n rows (each row flattened)."""
    flat = np.ascontiguousarray(np.asarray(values, dtype=np.float64).reshape(count, -1))
    offsets = np.arange(count + 1, dtype=np.int32) * flat.shape[1]
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat.reshape(-1)))


def _chunk_table(schema: pa.Schema, output_names: list[str], row_ids: np.ndarray, errors: list[RowError],
                 result: dict) -> pa.Table:
    ok = not result["error"]
    n, failed = len(row_ids), len(errors)

    def column(field: pa.Field, scored: pa.Array | None, failures: list | None = None) -> pa.Array:
        """The scored rows' cells (all null if None), then one per refused row (null if None)."""
        head = scored if scored is not None else pa.nulls(n, field.type)
        tail = pa.array(failures, field.type) if failures is not None else pa.nulls(failed, field.type)
        return pa.concat_arrays([head.cast(field.type), tail])

    status = pa.array(["ok" if ok else "error"], pa.string())
    columns = {
        "row_id": column(schema.field("row_id"), pa.array(np.asarray(row_ids, np.int64)), [e.row_id for e in errors]),
        "line": column(schema.field("line"), None, [e.line for e in errors]),
        "status": column(schema.field("status"), status.take(np.zeros(n, np.int64)), ["error"] * failed),
        "stage": column(schema.field("stage"), None if ok else pa.array(["inference"] * n, pa.string()),
                        [e.stage for e in errors]),
        "reason": column(schema.field("reason"), None if ok else pa.array([result["error"]] * n, pa.string()),
                         [e.reason for e in errors]),
        "input_digest": column(schema.field("input_digest"), hashes_array(result["digests"], n) if ok and n else None),
        "leaf": column(schema.field("leaf"), hashes_array(result["leaves"], n) if ok and n else None),
    }
    for i, name in enumerate(output_names):
        columns[name] = column(schema.field(name), list_array(result["outputs"][i], n) if ok and n else None)
    return pa.Table.from_arrays([columns[name] for name in schema.names], schema=schema).sort_by("row_id")
