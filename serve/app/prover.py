"""Prover deployment: EZKL proofs in Ray worker processes; it proves and checks outputs, nothing else.

EZKL holds the GIL for a whole proof and spreads it over rayon threads, so parallelism comes from
replicas (processes), each with RAYON_NUM_THREADS = cores / replicas. A replica proves one proof at a
time but accepts the next request meanwhile, so the next proof starts the moment one ends. Replicas
run at a lower CPU priority (and, with ``prover_cores``, on their own cores): inference wins a core
when both want it, and proofs take every cycle inference leaves.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import numpy as np
from ray import serve

from circuits import InputError, Prover, decode_outputs
from serve.app import metrics
from serve.app.cpu import pin_to_cores, run_when_idle
from serve.app.direct import keep_replica_servers_local
from serve.app.models import ModelSpec
from serve.app.store import ProofJob

logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class ProofOutcome:
    """The Prover's answer for one job: proven and checked, or why not."""

    proof_id: str
    ok: bool
    error: str = ""
    proof_json: bytes = b""
    proof_hash: str = ""
    row_offset: int = 0
    proven_outputs_match: bool = False
    proven_outputs: dict = field(default_factory=dict)  # name -> (shape, values) of this job's rows


def outputs_agree(proven: np.ndarray, computed: np.ndarray, tolerance: float) -> tuple[bool, float]:
    """Whether the proof's outputs match ONNX Runtime's within tolerance, and the worst difference."""
    if proven.shape != computed.shape:
        return False, float("inf")
    worst = float(np.max(np.abs(proven - computed.astype(np.float64)), initial=0.0))
    return worst <= tolerance, worst


@serve.deployment(max_ongoing_requests=2)
class ProverDeployment:
    def __init__(self, spec: ModelSpec, proof_batching: str = "per_request", batch_wait_timeout_s: float = 0.05,
                 prover_cores: int | None = None):
        keep_replica_servers_local()
        run_when_idle()
        pin_to_cores(prover_cores)
        self.spec = spec
        self.package = spec.load_package()  # from this node's cache (object store on first use), checked
        self.prover = Prover(self.package)
        self.shared = proof_batching == "shared" and spec.circuit_batch_size > 1
        self._one_at_a_time = asyncio.Lock()
        self._prove_shared.set_max_batch_size(spec.circuit_batch_size)
        self._prove_shared.set_batch_wait_timeout_s(batch_wait_timeout_s)

    async def prove(self, job: ProofJob) -> ProofOutcome:
        if self.shared:
            return await self._prove_shared(job)
        return (await self._prove_jobs([job]))[0]

    # Groups concurrent requests until their rows fill the circuit's batch: one proof for all.
    @serve.batch(max_batch_size=1, batch_wait_timeout_s=0.05, batch_size_fn=lambda jobs: sum(j.rows for j in jobs))
    async def _prove_shared(self, jobs: list[ProofJob]) -> list[ProofOutcome]:
        return await self._prove_jobs(jobs)

    async def _prove_jobs(self, jobs: list[ProofJob]) -> list[ProofOutcome]:
        tags = {"model": self.spec.name}
        async with self._one_at_a_time:
            try:
                inputs = [np.concatenate([job.inputs[t.name] for job in jobs]) for t in self.spec.inputs]
                started = time.perf_counter()
                # to_thread keeps the replica's event loop structurally free; EZKL still holds the GIL.
                proof = await asyncio.to_thread(self.prover.prove, inputs)
                metrics.proof_latency().observe((time.perf_counter() - started) * 1000, tags=tags)
                proven = self._decode(proof)
            except Exception as error:  # noqa: BLE001 - every job gets a failed outcome, never a lost one
                reason = str(error) if isinstance(error, InputError) else f"proving failed: {type(error).__name__}"
                logger.exception("proof of %d job(s) for %s failed", len(jobs), self.spec.name)
                return [ProofOutcome(job.proof_id, ok=False, error=reason) for job in jobs]
        proof_json = proof.to_json().encode()
        outcomes, offset = [], 0
        for job in jobs:
            outcomes.append(self._check(job, proof, proof_json, proven, offset))
            offset += job.rows
        return outcomes

    def _decode(self, proof) -> dict[str, np.ndarray] | None:
        if self.spec.visibility.get("output") != "public":
            return None  # hashed/private outputs cannot be read back as numbers
        return {t.name: array for t, array in zip(self.spec.outputs, decode_outputs(self.package, proof), strict=False)}

    def _check(self, job: ProofJob, proof, proof_json: bytes, proven: dict[str, np.ndarray] | None,
               offset: int) -> ProofOutcome:
        """A proof of other outputs than the ones returned is a failed proof, with the reason."""
        common = {"proof_json": proof_json, "proof_hash": proof.proof_hash, "row_offset": offset}
        if proven is None:
            return ProofOutcome(job.proof_id, ok=True, **common)
        mine = {name: array[offset:offset + job.rows] for name, array in proven.items()}
        shown = {name: (tuple(a.shape), tuple(float(v) for v in a.ravel())) for name, a in mine.items()}
        for name, array in mine.items():
            agree, worst = outputs_agree(array, job.outputs[name], self.spec.tolerance)
            if not agree:
                return ProofOutcome(job.proof_id, ok=False, proven_outputs=shown, **common, error=(
                    f"the proof's output {name!r} differs from ONNX Runtime's by {worst:.6g}, over the model's "
                    f"tolerance {self.spec.tolerance:g}: the input lies where the circuit is not accurate"))
        return ProofOutcome(job.proof_id, ok=True, proven_outputs_match=True, proven_outputs=shown, **common)
