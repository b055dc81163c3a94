"""Proof records on disk under ``<state>/proofs``: records/<id>.json, proofs/<hash>.json, jobs/<id>.npz.

Written atomically, so a restarted owner reloads every record and finds unfinished jobs to prove
again. Used only by ``serve.app.proofs.ProofService``; no Ray here.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from serve.files import write_atomically
from serve.protocol.types import ProofRecord


@dataclass
class ProofJob:
    """One request's rows to prove, with ONNX Runtime's outputs for them to check the proof against."""

    proof_id: str
    model: str
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]

    @property
    def rows(self) -> int:
        return len(next(iter(self.inputs.values())))

    def to_bytes(self, meta: np.ndarray | None = None) -> bytes:
        buffer = io.BytesIO()
        arrays = {f"in:{k}": v for k, v in self.inputs.items()} | {f"out:{k}": v for k, v in self.outputs.items()}
        if meta is not None:
            arrays["meta"] = meta
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, proof_id: str, model: str, data: bytes) -> "ProofJob":
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            inputs = {k[3:]: archive[k] for k in archive.files if k.startswith("in:")}
            outputs = {k[4:]: archive[k] for k in archive.files if k.startswith("out:")}
        return cls(proof_id, model, inputs, outputs)


def replace_quickly(path: Path, data: bytes) -> None:
    """Atomic (a reader or a restarted process sees the old file or the new one, so kill -9 safe)
    but not fsynced: a queued job is written on the response path of attest=async, where an fsync
    costs milliseconds. Finished proofs use serve.files.write_atomically (fsynced)."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


class ProofFiles:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        for sub in ("records", "proofs", "jobs"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def save_record(self, record: ProofRecord) -> None:
        data = json.dumps(record.to_dict()).encode()
        path = self.root / "records" / f"{record.proof_id}.json"
        (write_atomically if record.status.finished else replace_quickly)(path, data)

    def load_records(self) -> list[ProofRecord]:
        records = []
        for path in (self.root / "records").glob("*.json"):
            try:
                records.append(ProofRecord.from_dict(json.loads(path.read_text())))
            except (ValueError, KeyError, TypeError):  # a hand-edited file; the rest still load
                continue
        return records

    def save_proof(self, proof_hash: str, proof_json: bytes) -> None:
        path = self.root / "proofs" / f"{proof_hash}.json"
        if not path.exists():  # a shared proof is stored once for all its requests
            write_atomically(path, proof_json)

    def load_proof(self, proof_hash: str) -> bytes:
        path = self.root / "proofs" / f"{proof_hash}.json"
        return path.read_bytes() if path.exists() else b""

    def save_job(self, job: ProofJob, record: ProofRecord) -> None:
        """The job with its QUEUED record in one file: one write before an attested request is answered."""
        meta = np.frombuffer(json.dumps(record.to_dict()).encode(), dtype=np.uint8)
        replace_quickly(self.root / "jobs" / f"{job.proof_id}.npz", job.to_bytes(meta))

    def orphan_records(self, known: set[str]) -> list[ProofRecord]:
        """QUEUED records of jobs whose record file was not written yet when the process died."""
        found = []
        for path in (self.root / "jobs").glob("*.npz"):
            if path.stem in known:
                continue
            try:
                with np.load(path, allow_pickle=False) as archive:
                    found.append(ProofRecord.from_dict(json.loads(archive["meta"].tobytes())))
            except (ValueError, KeyError, OSError):
                continue
        return found

    def load_job(self, proof_id: str, model: str) -> ProofJob | None:
        path = self.root / "jobs" / f"{proof_id}.npz"
        if not path.exists():
            return None
        try:
            return ProofJob.from_bytes(proof_id, model, path.read_bytes())
        except (ValueError, OSError):
            return None

    def drop_job(self, proof_id: str) -> None:
        (self.root / "jobs" / f"{proof_id}.npz").unlink(missing_ok=True)
