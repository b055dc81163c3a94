"""The one owner of a proof's life: create, dispatch, retry, requeue after a restart, store, submit.

Runs inside the ingress replica (there is one per node: it owns the ingress port), so creating a
proof costs no hop. The Prover deployment only proves and checks; everything about a proof's
status goes through here and is written to disk (``serve.app.store``) before anyone is told.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from serve.app import metrics
from serve.app.models import ModelSpec
from serve.app.prover import ProofOutcome
from serve.app.store import ProofFiles, ProofJob
from serve.errors import ResourceExhausted
from serve.protocol.types import ProofRecord, ProofStatus
from serve.security import ANONYMOUS, current_principal

logger = logging.getLogger("ray.serve")
ModelKey = tuple[str, str]  # (model name, model_id): one served version of a model
PROVER_ATTEMPTS = 3  # a prover replica that dies mid-proof gets the job again, twice


@dataclass
class _Lane:
    """One served model version's queue of jobs and the worker tasks that prove them in order."""

    jobs: asyncio.Queue = field(default_factory=asyncio.Queue)  # bounded by ProofService.admit
    workers: list[asyncio.Task] = field(default_factory=list)


class ProofService:
    def __init__(self, root: str, specs: Mapping[str, ModelSpec], provers: Mapping[str, object],
                 max_queued: int, verifier_target: str | None = None, in_flight: Mapping[str, int] | None = None,
                 verifier_client: Mapping | None = None, max_queued_per_key: int = 0):
        self.files = ProofFiles(root)
        # (model name, model_id) -> DeploymentHandle of its Prover: a new version of a name (a new
        # model_id) gets its own prover while the old one finishes the proofs it was given
        self.provers: dict[ModelKey, object] = {(name, spec.model_id): provers[name]
                                                for name, spec in specs.items() if name in provers}
        self.max_queued = int(max_queued)
        self.verifier_target = verifier_target
        self.verifier_client = dict(verifier_client or {})  # VerifierClient's token, root_cert and server_name
        self.max_queued_per_key = int(max_queued_per_key)
        self._owners: dict[str, str] = {}  # unfinished proof id -> API key id that asked for it
        self._per_key: Counter[str] = Counter()  # API key id -> its unfinished proofs (checked per request)
        self.records: dict[str, ProofRecord] = {r.proof_id: r for r in self.files.load_records()}
        for proof_id, (record, job) in self.files.logged_jobs().items():
            if proof_id in self.records and self.records[proof_id].status.finished:
                self.files.drop_job(proof_id)  # finished just before a crash: the record is the truth
            else:
                self.records[proof_id] = record
                if job.owner is not None:  # a restart keeps each key's share of the queue
                    self._own(proof_id, job.owner)
        # Each served version proves its jobs in arrival order through a lane of ``in_flight``
        # workers (as many jobs as its prover replicas take, so Ray's router never backs off
        # between proofs): a fixed set of tasks however many jobs wait, none created per request.
        self._width: dict[ModelKey, int] = {(name, spec.model_id): max(1, int((in_flight or {}).get(name, 2)))
                                            for name, spec in specs.items()}
        self._lanes: dict[ModelKey, _Lane] = {}
        self._finished: dict[str, asyncio.Future] = {}  # proof id -> resolved when a sync caller's job ends
        self._changed: asyncio.Condition | None = None
        self._watchers = 0  # coroutines waiting on _changed
        self._disk = ThreadPoolExecutor(1, thread_name_prefix="proof-store")  # one writer: writes stay in order
        self._tasks: set[asyncio.Task] = set()
        self._verifier = None
        self._unfinished = {pid for pid, r in self.records.items() if not r.status.finished}

    # --- the life of a proof ----------------------------------------------------------------------
    def admit(self, model: str) -> None:
        """ResourceExhausted when the queue of unfinished proofs is full, or the calling API key's
        share of it (checked before any work; anonymous callers, with auth off, share the whole)."""
        unfinished = len(self._unfinished)
        if unfinished >= self.max_queued:
            metrics.proofs_refused().inc(tags={"model": model, "code": "RESOURCE_EXHAUSTED"})
            raise ResourceExhausted(f"{unfinished} proofs are queued, the limit is {self.max_queued} "
                                    f"(zkserve.serving.max_queued_proofs); retry later, or use attest=none")
        key = self._caller()
        if key is not None and self.max_queued_per_key > 0:
            mine = self._per_key[key]
            if mine >= self.max_queued_per_key:
                metrics.proofs_refused().inc(tags={"model": model, "code": "RESOURCE_EXHAUSTED"})
                raise ResourceExhausted(f"API key {key} has {mine} proofs queued, its limit "
                                        f"(zkserve.ingress.max_queued_proofs_per_key); wait for some to finish "
                                        f"(WatchProof) and retry")

    @staticmethod
    def _caller() -> str | None:
        """The API key of the current call; None for anonymous callers (auth off)."""
        principal = current_principal()
        return None if principal is None or principal is ANONYMOUS else principal.key_id

    async def create(self, spec: ModelSpec, job: ProofJob) -> ProofRecord:
        """The QUEUED record, on disk with its job before the caller answers."""
        record = ProofRecord(job.proof_id, spec.name, spec.model_id, ProofStatus.QUEUED, job.rows)
        job.owner = self._caller()
        if job.owner is not None:
            self._own(job.proof_id, job.owner)
        self.files.append_job(job, record)  # one appended line: the job, its owner and its record
        await self._put(record)
        return record

    async def prove(self, job: ProofJob) -> ProofRecord:
        """Proves in its turn and returns the finished record (with the proof when done)."""
        finished = asyncio.get_running_loop().create_future()
        self._finished[job.proof_id] = finished
        self.prove_later(job)
        await finished
        return self.get(job.proof_id)

    def prove_later(self, job: ProofJob) -> None:
        """Queues the job in its model version's lane (created, with its workers, on first use)."""
        key = (job.model, self.records[job.proof_id].model_id)
        lane = self._lanes.get(key)
        if lane is None or lane.workers[0].done():  # (done: its loop ended, as in tests' asyncio.run)
            lane = self._lanes[key] = _Lane()
            for _ in range(self._width.get(key, 1)):
                lane.workers.append(asyncio.get_running_loop().create_task(self._work(key, lane)))
        lane.jobs.put_nowait(job)

    async def _work(self, key: ModelKey, lane: _Lane) -> None:
        """One worker of a lane: proves its jobs one after another until the lane is retired."""
        while True:
            job = await lane.jobs.get()
            try:
                await self._run(key, job)
            except Exception as error:  # noqa: BLE001 - the worker must outlive any one job
                logger.exception("proof %s: unexpected error", job.proof_id)
                with contextlib.suppress(Exception):
                    await self._fail(job, f"internal error while proving ({type(error).__name__}); "
                                          "send the request again", "internal")
            finally:
                finished = self._finished.pop(job.proof_id, None)
                if finished is not None and not finished.done():
                    finished.set_result(None)

    async def _run(self, key: ModelKey, job: ProofJob) -> None:
        prover = self.provers.get(key)
        if prover is None:
            await self._fail(job, f"model {job.model} ({key[1]}) is no longer served", "model_gone")
            return
        outcome: ProofOutcome | None = None
        await self._put(self.records[job.proof_id].evolve(status=ProofStatus.PROVING))
        for attempt in range(1, PROVER_ATTEMPTS + 1):
            try:
                outcome = await prover.prove.remote(job)
                break
            except Exception as error:  # noqa: BLE001 - a replica died; the proof itself did not fail
                logger.warning("proof %s: prover call failed (attempt %d): %r", job.proof_id, attempt, error)
        if outcome is None:
            await self._fail(job, "no prover replica could take the job; send the request again", "no_prover")
        elif not outcome.ok:
            mismatch = bool(outcome.proof_hash)
            if mismatch:
                metrics.output_mismatches().inc(tags={"model": job.model})
            await self._fail(job, outcome.error, "output_mismatch" if mismatch else "prover_error", outcome)
        else:
            await self._complete(job, outcome)

    async def _complete(self, job: ProofJob, outcome: ProofOutcome) -> None:
        await self._write(self.files.save_proof, outcome.proof_hash, outcome.proof_json)
        record = self.records[job.proof_id].evolve(
            status=ProofStatus.DONE, finished_at=time.time(), proof_hash=outcome.proof_hash,
            row_offset=outcome.row_offset, proven_outputs_match=outcome.proven_outputs_match,
            proven_outputs=outcome.proven_outputs)
        await self._put(record)
        self.files.drop_job(job.proof_id)
        metrics.proofs_done().inc(tags={"model": job.model})
        if self.verifier_target and outcome.row_offset == 0:  # a shared proof is submitted once
            self._spawn(self._submit(job.model, record.model_id, outcome.proof_json))

    async def _fail(self, job: ProofJob, reason: str, kind: str, outcome: ProofOutcome | None = None) -> None:
        fields = {"status": ProofStatus.FAILED, "error": reason, "finished_at": time.time()}
        if outcome is not None and outcome.proof_hash:  # kept for diagnosis; never shown as proven
            fields |= {"proof_hash": outcome.proof_hash, "proven_outputs": outcome.proven_outputs}
        await self._put(self.records[job.proof_id].evolve(**fields))
        self.files.drop_job(job.proof_id)
        metrics.proofs_failed().inc(tags={"model": job.model, "reason": kind})
        logger.warning("proof %s of %s failed: %s", job.proof_id, job.model, reason)

    async def _submit(self, model: str, model_id: str, proof_json: bytes) -> None:
        """Off the response path: the verifier queues the proof's hash for the chain."""
        from circuits import Proof
        from serve.verifier.client import VerifierClient

        tags = {"model": model}
        try:
            proof = Proof.from_json(proof_json)
            if self._verifier is None:
                self._verifier = VerifierClient(self.verifier_target, **self.verifier_client)
            await asyncio.to_thread(self._verifier.submit, model_id, proof)
            metrics.proofs_submitted().inc(tags=tags | {"result": "accepted"})
        except Exception as error:  # noqa: BLE001 - the verifier being down must not fail inference
            metrics.proofs_submitted().inc(tags=tags | {"result": "failed"})
            logger.warning("a proof of %s was not submitted to the verifier: %s", model, error)

    async def requeue_unfinished(self) -> int:
        """Jobs a previous run left queued or proving are proven again (or failed, if their inputs are gone)."""
        unfinished = [r for r in self.records.values() if not r.status.finished]
        logged = self.files.logged_jobs()
        for record in unfinished:
            job = logged.get(record.proof_id, (None, None))[1]
            if job is None:
                await self._fail(ProofJob(record.proof_id, record.model, {}, {}),
                                 "the job's inputs were lost before it was proven; send the request again", "lost")
            else:
                await self._put(record.evolve(status=ProofStatus.QUEUED))
                self.prove_later(job)
        if unfinished:
            logger.info("requeued %d unfinished proof(s)", len(unfinished))
        return len(unfinished)

    # --- live models ----------------------------------------------------------------------------------
    def add_model(self, spec: ModelSpec, prover, in_flight: int) -> None:
        """Proofs of ``spec`` go to ``prover`` from now on."""
        key = (spec.name, spec.model_id)
        self.provers[key] = prover
        self._width.setdefault(key, max(1, int(in_flight)))

    def unfinished(self, key: ModelKey) -> int:
        return sum(1 for pid in self._unfinished if (self.records[pid].model, self.records[pid].model_id) == key)

    async def retire(self, key: ModelKey) -> None:
        """Waits until every proof already given to the model ``key`` has finished, then forgets
        its prover (the caller then deletes the prover's deployment). A caller's timeout leaves
        the prover in place, still finishing."""
        async with self._watching() as changed:
            await changed.wait_for(lambda: not self.unfinished(key))
        self.provers.pop(key, None)
        self._width.pop(key, None)
        lane = self._lanes.pop(key, None)
        for worker in lane.workers if lane is not None else ():
            worker.cancel()

    def served_keys(self) -> list[ModelKey]:
        return list(self.provers)

    # --- reads --------------------------------------------------------------------------------------
    def get(self, proof_id: str) -> ProofRecord | None:
        record = self.records.get(proof_id)
        if record is not None and record.status is ProofStatus.DONE and not record.proof:
            record = record.evolve(proof=self.files.load_proof(record.proof_hash))
        return record

    async def wait_change(self, proof_id: str, known: ProofStatus, timeout_s: float = 10.0) -> ProofRecord | None:
        def moved() -> bool:
            record = self.records.get(proof_id)
            return record is None or record.status is not known

        async with self._watching() as changed:
            try:
                await asyncio.wait_for(changed.wait_for(moved), timeout_s)
            except TimeoutError:
                pass
        return self.get(proof_id)

    def counts(self) -> dict[str, Counter]:
        per_model: dict[str, Counter] = {}
        for record in self.records.values():
            per_model.setdefault(record.model, Counter())[record.status.value] += 1
        return per_model

    def close(self) -> None:
        """Stops the lanes' workers and waits for the writes already asked for."""
        for lane in self._lanes.values():
            for worker in lane.workers:
                worker.cancel()
        self._lanes.clear()
        self._disk.shutdown(wait=True)
        self.files.close()

    # --- plumbing -----------------------------------------------------------------------------------
    def _condition(self) -> asyncio.Condition:
        if self._changed is None:  # created on the replica's loop, on first use
            self._changed = asyncio.Condition()
        return self._changed

    @contextlib.asynccontextmanager
    async def _watching(self):
        """The change condition, held; counted so that ``_put`` notifies only when someone waits."""
        self._watchers += 1
        try:
            async with self._condition():
                yield self._condition()
        finally:
            self._watchers -= 1

    def _write(self, fn, *args) -> asyncio.Future:
        """Submitted now, so writes reach the disk in the order they were asked for."""
        return asyncio.get_running_loop().run_in_executor(self._disk, fn, *args)

    async def _put(self, record: ProofRecord) -> None:
        """A finished record is on disk (fsynced) before anyone is told; an unfinished one lives in
        the job log (a restart proves it again), so QUEUED and PROVING cost no disk write."""
        if record.status.finished:
            await self._write(self.files.save_record, record)
        self.records[record.proof_id] = record.evolve(proof=b"") if record.proof else record
        if record.status.finished:
            self._unfinished.discard(record.proof_id)
            owner = self._owners.pop(record.proof_id, None)
            if owner is not None:
                self._per_key[owner] -= 1
        else:
            self._unfinished.add(record.proof_id)
        metrics.tally().set_gauge("proof_queue_depth", len(self._unfinished))
        if self._watchers:  # WatchProof streams and retirements; most puts have none to wake
            async with self._condition():
                self._condition().notify_all()

    def _own(self, proof_id: str, key: str) -> None:
        self._owners[proof_id] = key
        self._per_key[key] += 1

    def _spawn(self, coroutine) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)  # keep a reference until it finishes
        task.add_done_callback(self._tasks.discard)
