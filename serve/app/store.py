"""Proofs on disk under ``<state>/proofs`` (layout in ``ProofFiles``): a restarted owner reloads every
finished record and proves the unfinished jobs again. Used only by ``serve.app.proofs.ProofService``;
no Ray here."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from serve.files import write_atomically
from serve.protocol.types import ProofRecord


@dataclass
class ProofJob:
    """One request's rows to prove, with ONNX Runtime's outputs for them to check the proof against."""

    proof_id: str
    model: str
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    owner: str | None = None  # the API key id that asked (None: anonymous): its share of the queue

    @property
    def rows(self) -> int:
        return len(next(iter(self.inputs.values())))

    def to_json(self) -> dict:
        """Arrays as dtype, shape and base64 of their bytes (np.savez cost ~10x more per job)."""
        def encode(arrays: dict[str, np.ndarray]) -> dict:  # tobytes() is C order whatever the layout
            return {name: (a.dtype.str, a.shape, base64.b64encode(a.tobytes()).decode()) for name, a in arrays.items()}

        return {"inputs": encode(self.inputs), "outputs": encode(self.outputs), "owner": self.owner}

    @classmethod
    def from_json(cls, proof_id: str, model: str, document: dict) -> ProofJob:
        def decode(arrays: dict) -> dict[str, np.ndarray]:
            return {name: np.frombuffer(base64.b64decode(data), dtype=np.dtype(dtype)).reshape(shape)
                    for name, (dtype, shape, data) in arrays.items()}

        return cls(proof_id, model, decode(document["inputs"]), decode(document["outputs"]), document.get("owner"))


class ProofFiles:
    """records/<id>.json (finished records, fsynced), proofs/<hash>.json, and jobs.log: an
    append-only log of queued jobs, one JSON line each (the QUEUED record and the job's arrays).

    Appending a line and flushing it to the OS is the one write on the response path of an
    attested request (tens of microseconds; a new file per job cost ~0.6 ms here and an fsync
    ~2 ms). It survives kill -9 of the process, not a power cut. The log is emptied whenever
    every job in it has finished.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        for sub in ("records", "proofs"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._pending = self._read_log()
        self._log = open(self.root / "jobs.log", "ab")  # noqa: SIM115 - held for the owner's life

    def _read_log(self) -> dict[str, tuple[ProofRecord, ProofJob]]:
        path = self.root / "jobs.log"
        pending: dict[str, tuple[ProofRecord, ProofJob]] = {}
        if not path.exists():
            return pending
        for line in path.read_bytes().splitlines():
            try:
                entry = json.loads(line)
                record = ProofRecord.from_dict(entry["record"])
                job = ProofJob.from_json(record.proof_id, record.model, entry["job"])
            except (ValueError, KeyError, TypeError):  # a line cut short by a crash
                continue
            pending[record.proof_id] = (record, job)
        return pending

    def append_job(self, job: ProofJob, record: ProofRecord) -> None:
        # On the response path of every attested request: orjson (a tenth of json.dumps's time) and
        # only the fields a new QUEUED record has (the rest are their defaults when read back)
        queued = {"proof_id": record.proof_id, "model": record.model, "model_id": record.model_id,
                  "status": record.status.value, "rows": record.rows, "created_at": record.created_at}
        self._log.write(orjson.dumps({"record": queued, "job": job.to_json()}) + b"\n")
        self._log.flush()
        self._pending[job.proof_id] = (record, job)

    def logged_jobs(self) -> dict[str, tuple[ProofRecord, ProofJob]]:
        """Jobs in the log that have not finished: (QUEUED record, job) by proof id."""
        return dict(self._pending)

    def drop_job(self, proof_id: str) -> None:
        self._pending.pop(proof_id, None)
        if not self._pending:
            self._log.truncate(0)

    def close(self) -> None:
        self._log.close()

    def save_record(self, record: ProofRecord) -> None:
        data = json.dumps(record.to_dict()).encode()
        write_atomically(self.root / "records" / f"{record.proof_id}.json", data)

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
