"""Proof records (dicts from the store) and tensors as zkserve.v1 messages."""

from __future__ import annotations

import numpy as np
from zkserve.v1 import attestation_pb2 as pb

from serve.app.jobs import DONE, FAILED, PROVING, QUEUED

STATUS = {QUEUED: pb.PROOF_STATUS_QUEUED, PROVING: pb.PROOF_STATUS_PROVING,
          DONE: pb.PROOF_STATUS_DONE, FAILED: pb.PROOF_STATUS_FAILED}


def tensor_message(name: str, array: np.ndarray) -> pb.Tensor:
    return pb.Tensor(name=name, shape=list(array.shape), values=np.asarray(array, dtype=np.float32).ravel().tolist())


def proof_record_message(record: dict) -> pb.ProofRecord:
    message = pb.ProofRecord(
        proof_id=record["proof_id"], model=record["model"], model_id=record["model_id"],
        status=STATUS[record["status"]], proof_hash=record.get("proof_hash", ""),
        proven_outputs_match=bool(record.get("proven_outputs_match")),
        row_offset=int(record.get("row_offset", 0)), rows=int(record.get("rows", 0)),
        error=record.get("error", ""), created_at=record.get("created_at", 0.0),
        finished_at=record.get("finished_at", 0.0),
    )
    if record.get("proof"):
        message.proof = record["proof"]
    for name, tensor in (record.get("proven_outputs") or {}).items():
        message.proven_outputs.add(name=name, shape=tensor["shape"], values=tensor["values"])
    return message
