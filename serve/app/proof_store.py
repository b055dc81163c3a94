"""Proof store deployment: proofs by id with their status, persisted under the state dir.

One replica owns the files. Records, proofs and unfinished jobs are written atomically,
so a restarted replica reloads every finished proof and hands unfinished jobs back to be
proven again. Watchers long-poll ``wait_change`` instead of polling the disk.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

from ray import serve

from serve.app import metrics
from serve.app.jobs import DONE, FAILED, FINISHED, PROVING, QUEUED
from serve.files import write_atomically


class ProofFiles:
    """The on-disk layout: records/<id>.json, proofs/<hash>.json, jobs/<id>.npz."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        for sub in ("records", "proofs", "jobs"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def save_record(self, record: dict) -> None:
        write_atomically(self.root / "records" / f"{record['proof_id']}.json", json.dumps(record).encode())

    def load_records(self) -> list[dict]:
        records = []
        for path in (self.root / "records").glob("*.json"):
            try:
                records.append(json.loads(path.read_text()))
            except ValueError:  # a torn write cannot happen (atomic), but a hand-edited file can
                continue
        return records

    def save_proof(self, proof_hash: str, proof_json: bytes) -> None:
        path = self.root / "proofs" / f"{proof_hash}.json"
        if not path.exists():  # a shared proof is stored once for all its requests
            write_atomically(path, proof_json)

    def load_proof(self, proof_hash: str) -> bytes:
        return (self.root / "proofs" / f"{proof_hash}.json").read_bytes()

    def save_job(self, proof_id: str, job: bytes) -> None:
        write_atomically(self.root / "jobs" / f"{proof_id}.npz", job)

    def load_job(self, proof_id: str) -> bytes | None:
        path = self.root / "jobs" / f"{proof_id}.npz"
        return path.read_bytes() if path.exists() else None

    def drop_job(self, proof_id: str) -> None:
        (self.root / "jobs" / f"{proof_id}.npz").unlink(missing_ok=True)


@serve.deployment(num_replicas=1, max_ongoing_requests=10_000, ray_actor_options={"num_cpus": 0})
class ProofStore:
    def __init__(self, root: str):
        self.files = ProofFiles(root)
        self.records = {r["proof_id"]: r for r in self.files.load_records()}
        self.changed = asyncio.Condition()
        self._unfinished = [pid for pid, r in self.records.items() if r["status"] not in FINISHED]
        self._publish_depth()

    # --- writes ---------------------------------------------------------------------------
    async def create(self, proof_id: str, model: str, model_id: str, rows: int, job: bytes) -> dict:
        self.files.save_job(proof_id, job)
        record = {"proof_id": proof_id, "model": model, "model_id": model_id, "status": QUEUED,
                  "rows": rows, "row_offset": 0, "created_at": time.time(), "finished_at": 0.0,
                  "proof_hash": "", "proven_outputs_match": False, "proven_outputs": {}, "error": ""}
        await self._put(record)
        return record

    async def mark_proving(self, proof_ids: list[str]) -> None:
        for proof_id in proof_ids:
            if proof_id in self.records and self.records[proof_id]["status"] == QUEUED:
                await self._put(self.records[proof_id] | {"status": PROVING})

    async def complete(self, proof_id: str, proof_json: bytes, fields: dict) -> dict:
        self.files.save_proof(fields["proof_hash"], proof_json)
        record = self.records[proof_id] | fields | {"status": DONE, "finished_at": time.time()}
        await self._put(record)
        self.files.drop_job(proof_id)
        return record

    async def fail(self, proof_id: str, error: str) -> dict:
        record = self.records[proof_id] | {"status": FAILED, "error": error, "finished_at": time.time()}
        await self._put(record)
        self.files.drop_job(proof_id)
        return record

    async def _put(self, record: dict) -> None:
        self.files.save_record(record)  # on disk before anyone is told
        self.records[record["proof_id"]] = record
        self._publish_depth()
        async with self.changed:
            self.changed.notify_all()

    # --- reads ----------------------------------------------------------------------------
    def get(self, proof_id: str, with_proof: bool = True) -> dict | None:
        record = self.records.get(proof_id)
        if record is None:
            return None
        if with_proof and record["status"] == DONE:
            return record | {"proof": self.files.load_proof(record["proof_hash"])}
        return dict(record)

    async def wait_change(self, proof_id: str, known_status: str, timeout_s: float = 10.0) -> dict | None:
        """The record once its status differs from ``known_status`` (or after the timeout)."""

        def moved() -> bool:
            record = self.records.get(proof_id)
            return record is None or record["status"] != known_status

        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait_for(moved), timeout_s)
            except TimeoutError:
                pass
        return self.get(proof_id)

    def counts(self) -> dict[str, dict[str, int]]:
        """Proofs per model per status."""
        per_model: dict[str, Counter] = {}
        for record in self.records.values():
            per_model.setdefault(record["model"], Counter())[record["status"]] += 1
        return {model: dict(counter) for model, counter in per_model.items()}

    async def claim_unfinished(self) -> list[tuple[str, str, bytes]]:
        """Jobs left queued or proving by a previous run, handed out once: (id, model, job)."""
        claimed, self._unfinished = self._unfinished, []
        jobs = []
        for proof_id in claimed:
            job = self.files.load_job(proof_id)
            if job is None:
                await self.fail(proof_id, "the job's inputs were lost before it was proven; send the request again")
            else:
                jobs.append((proof_id, self.records[proof_id]["model"], job))
        return jobs

    def _publish_depth(self) -> None:
        depth = Counter(r["model"] for r in self.records.values() if r["status"] in (QUEUED, PROVING))
        for model in {r["model"] for r in self.records.values()}:
            metrics.proof_queue_depth().set(depth.get(model, 0), tags={"model": model})
