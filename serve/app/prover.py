"""Prover deployment: EZKL proofs in Ray worker processes, one package's keys per replica.

EZKL holds the GIL for a whole proof and spreads it over rayon threads, so parallelism
comes from replicas (processes), each with RAYON_NUM_THREADS = cores / replicas. Replicas
take one proof at a time; the rest wait in the handle queues, which is what autoscaling
watches (Ray Serve counts queued plus running requests).
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from circuits import InputError, decode_outputs
from circuits import Prover as CircuitProver
from serve.app import metrics
from serve.app.jobs import ProofJob
from serve.app.models import ModelSpec
from serve.verifier.client import VerifierClient

logger = logging.getLogger("ray.serve")


def outputs_agree(proven: np.ndarray, computed: np.ndarray, tolerance: float) -> bool:
    if proven.shape != computed.shape:
        return False
    return bool(np.max(np.abs(proven - computed.astype(np.float64)), initial=0.0) <= tolerance)


@serve.deployment(max_ongoing_requests=1)
class Prover:
    def __init__(self, spec: ModelSpec, store: DeploymentHandle, proof_batching: str = "per_request",
                 batch_wait_timeout_s: float = 0.05, verifier_target: str | None = None):
        self.spec = spec
        # every proof goes to the verifier service, which queues its hash for the chain
        self.verifier = VerifierClient(verifier_target) if verifier_target else None
        self.store = store
        self.package = spec.load_package()  # checks integrity once per replica
        self.prover = CircuitProver(self.package)
        self.shared = proof_batching == "shared" and spec.circuit_batch_size > 1
        self._prove_shared.set_max_batch_size(spec.circuit_batch_size)
        self._prove_shared.set_batch_wait_timeout_s(batch_wait_timeout_s)

    async def prove(self, job: ProofJob) -> dict:
        """Proves one request's rows; returns its finished record (with the proof JSON)."""
        if self.shared:
            return await self._prove_shared(job)
        return (await self._prove_jobs([job]))[0]

    # Groups concurrent requests until their rows fill the circuit's batch: one proof for all.
    @serve.batch(max_batch_size=1, batch_wait_timeout_s=0.05, batch_size_fn=lambda jobs: sum(j.rows for j in jobs))
    async def _prove_shared(self, jobs: list[ProofJob]) -> list[dict]:
        return await self._prove_jobs(jobs)

    async def _prove_jobs(self, jobs: list[ProofJob]) -> list[dict]:
        tags = {"model": self.spec.name}
        await self.store.mark_proving.remote([job.proof_id for job in jobs])
        try:
            inputs = [np.concatenate([job.inputs[t.name] for job in jobs]) for t in self.spec.inputs]
            started = time.perf_counter()
            # to_thread keeps the replica's event loop structurally free; EZKL still holds the GIL.
            proof = await asyncio.to_thread(self.prover.prove, inputs)
            metrics.proof_latency().observe((time.perf_counter() - started) * 1000, tags=tags)
            proven = self._decode(proof)
        except Exception as error:  # noqa: BLE001 - every job gets a FAILED record, not a lost one
            reason = str(error) if isinstance(error, InputError) else f"proving failed: {type(error).__name__}"
            logger.exception("proof of %d job(s) for %s failed", len(jobs), self.spec.name)
            metrics.proofs_failed().inc(len(jobs), tags=tags)
            return [await self.store.fail.remote(job.proof_id, reason) for job in jobs]

        proof_json = proof.to_json().encode()
        records, offset = [], 0
        for job in jobs:
            fields = self._check(job, proven, offset) | {"proof_hash": proof.proof_hash, "row_offset": offset}
            offset += job.rows
            record = await self.store.complete.remote(job.proof_id, proof_json, fields)
            records.append(record | {"proof": proof_json})
        if self.verifier is not None:
            asyncio.get_running_loop().create_task(self._submit(proof))
        return records

    async def _submit(self, proof) -> None:
        """Off the response path; a failure is logged and counted, the proof stays in the store."""
        tags = {"model": self.spec.name}
        try:
            await asyncio.to_thread(self.verifier.submit, self.package.model_id, proof)
            metrics.proofs_submitted().inc(tags=tags | {"result": "accepted"})
        except Exception as error:  # noqa: BLE001 - the verifier being down must not fail inference
            metrics.proofs_submitted().inc(tags=tags | {"result": "failed"})
            logger.warning("proof %s not submitted to the verifier: %s", proof.proof_hash, error)

    def _decode(self, proof) -> dict[str, np.ndarray] | None:
        if self.spec.visibility.get("output") != "public":
            return None  # hashed/private outputs cannot be read back as numbers
        return {t.name: array for t, array in zip(self.spec.outputs, decode_outputs(self.package, proof), strict=False)}

    def _check(self, job: ProofJob, proven: dict[str, np.ndarray] | None, offset: int) -> dict:
        """Compares the proof's public outputs for this job's rows with ONNX Runtime's."""
        if proven is None:
            return {"proven_outputs_match": False, "proven_outputs": {}}
        mine = {name: array[offset:offset + job.rows] for name, array in proven.items()}
        match = all(outputs_agree(mine[name], job.outputs[name], self.spec.tolerance) for name in mine)
        if not match:
            metrics.output_mismatches().inc(tags={"model": self.spec.name})
            logger.error("proof %s: proven outputs of %s disagree with ONNX Runtime beyond tolerance %g",
                         job.proof_id, self.spec.name, self.spec.tolerance)
        return {
            "proven_outputs_match": match,
            "proven_outputs": {
                name: {"shape": list(a.shape), "values": a.ravel().tolist()} for name, a in mine.items()
            },
        }
