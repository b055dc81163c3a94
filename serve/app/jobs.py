"""A proof job: one request's rows to prove, with the ONNX Runtime outputs to check."""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass

import numpy as np

QUEUED, PROVING, DONE, FAILED = "queued", "proving", "done", "failed"
FINISHED = (DONE, FAILED)


def new_proof_id() -> str:
    return uuid.uuid4().hex


@dataclass
class ProofJob:
    proof_id: str
    model: str
    inputs: dict[str, np.ndarray]  # this request's rows, by input name
    outputs: dict[str, np.ndarray]  # ONNX Runtime's outputs for the same rows

    @property
    def rows(self) -> int:
        return len(next(iter(self.inputs.values())))

    def to_bytes(self) -> bytes:
        """Kept on disk until the proof is done, so a restarted store can requeue it."""
        buffer = io.BytesIO()
        arrays = {f"in:{k}": v for k, v in self.inputs.items()} | {f"out:{k}": v for k, v in self.outputs.items()}
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, proof_id: str, model: str, data: bytes) -> ProofJob:
        with np.load(io.BytesIO(data)) as archive:
            inputs = {k[3:]: archive[k] for k in archive.files if k.startswith("in:")}
            outputs = {k[4:]: archive[k] for k in archive.files if k.startswith("out:")}
        return cls(proof_id, model, inputs, outputs)
