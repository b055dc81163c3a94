"""Committing finished proof batches as chunk files, and reading them back on resume.

A chunk is committed in two steps: its proofs are written (each atomically), then its
Parquet file is renamed into place. Only the rename makes the chunk's batches count as
done, so a kill at any point loses at most the batches buffered since the last commit;
proofs written without their chunk are redone and overwritten.
"""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from serve.files import write_atomically
from serve.scoring.layout import JobLayout

CHUNK_GLOB = "chunk-*.parquet"


def chunk_schema(output_names: list[str]) -> pa.Schema:
    return pa.schema([
        ("row_id", pa.int64()), ("status", pa.string()), ("stage", pa.string()), ("reason", pa.string()),
        *[(name, pa.list_(pa.float64())) for name in output_names],
        ("proof_id", pa.string()), ("proof_hash", pa.string()), ("proof_batch", pa.int64()), ("row_index", pa.int64()),
        ("max_abs_diff", pa.float64()), ("outputs_agree", pa.bool_()),
    ])


def table_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def committed_chunks(layout: JobLayout) -> list[Path]:
    return sorted(layout.chunks.glob(CHUNK_GLOB))


def committed_batches(layout: JobLayout) -> set[int]:
    """Proof batches already committed; a chunk that cannot be read is set aside and redone."""
    done: set[int] = set()
    for path in committed_chunks(layout):
        try:
            done.update(pq.read_table(path, columns=["proof_batch"]).column(0).to_pylist())
        except (pa.ArrowInvalid, OSError):
            path.replace(path.with_suffix(".unreadable"))
    return done


class ChunkWriter:
    """Buffers finished batches and commits them every `chunk_rows` rows or `flush_s` seconds."""

    def __init__(self, layout: JobLayout, output_names: list[str], chunk_rows: int = 256, flush_s: float = 5.0):
        self.layout = layout
        self.schema = chunk_schema(output_names)
        self.output_names = output_names
        self.chunk_rows = chunk_rows
        self.flush_s = flush_s
        self._records: list[dict] = []
        self._proofs: list[tuple[str, str]] = []
        self._oldest: float | None = None
        numbers = [int(path.stem.split("-")[1]) for path in committed_chunks(layout)]
        self._next = max(numbers, default=-1) + 1

    def add(self, result: dict) -> None:
        """One proving-stage result: the proofs and rows (or row errors) of one proof batch."""
        batch_id = result["batch_id"]
        for proof in result["proofs"]:
            if proof.get("proof"):
                self._proofs.append((proof["proof_id"], proof["proof"]))
            for row in proof["rows"]:
                self._records.append({
                    "row_id": row["row_id"], "status": "ok", **row["outputs"], "proof_id": proof["proof_id"],
                    "proof_hash": proof.get("proof_hash"), "proof_batch": batch_id, "row_index": row["row_index"],
                    "max_abs_diff": row.get("max_abs_diff"), "outputs_agree": row.get("outputs_agree"),
                })
        for error in result["errors"]:
            self._records.append({"row_id": error["row_id"], "status": "error", "stage": error["stage"],
                                  "reason": error["reason"], "proof_batch": batch_id})
        self._oldest = self._oldest or time.monotonic()

    def due(self) -> bool:
        return bool(self._records) and (len(self._records) >= self.chunk_rows
                                        or time.monotonic() - self._oldest >= self.flush_s)

    def flush(self) -> None:
        if not self._records:
            return
        for proof_id, proof_json in self._proofs:
            write_atomically(self.layout.proof_path(proof_id), proof_json.encode())
        table = pa.Table.from_pylist(self._records, schema=self.schema)
        write_atomically(self.layout.chunks / f"chunk-{self._next:06d}.parquet", table_bytes(table))
        self._next += 1
        self._records, self._proofs, self._oldest = [], [], None
