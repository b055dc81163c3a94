"""The data plane and the proof service without a server: domain refusal before proving, the
bounded proof queue, a proof of other outputs counted as failed, and records that survive."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import numpy as np
import pytest

from circuits.domain import InputDomain, InputRange
from serve import errors
from serve.app.dataplane import DataPlane
from serve.app.models import ModelSpec, TensorSpec
from serve.app.proofs import ProofService
from serve.app.prover import ProofOutcome, ProverDeployment
from serve.app.store import ProofFiles, ProofJob
from serve.protocol.types import AttestMode, InferRequest, ProofStatus, Tensor

DOMAIN = InputDomain("m", {"x": InputRange(np.full(4, -1.0), np.full(4, 1.0), "explicit", 0.0)})
SPEC = ModelSpec(name="m", model_id="0x1", inputs=(TensorSpec("x", (4,), "float32"),),
                 outputs=(TensorSpec("y", (2,), "float32"),), circuit_batch_size=1, tolerance=0.1,
                 visibility={"output": "public"}, insecure_srs=True, input_domain=DOMAIN)


async def double(inputs):
    return {"y": np.repeat(inputs["x"][:, :1] * 2, 2, axis=1)}


def plane(tmp_path, max_queued: int = 8) -> DataPlane:
    proofs = ProofService(str(tmp_path / "proofs"), {"m": SPEC}, provers={}, max_queued=max_queued)
    return DataPlane({"m": SPEC}, {"m": double}, proofs, AttestMode.NONE)


def request(values, attest) -> InferRequest:
    return InferRequest("m", (Tensor("x", "FP32", np.asarray([values], np.float32)),), attest=attest)


def test_attested_rows_outside_the_domain_are_refused_before_proving(tmp_path):
    data_plane = plane(tmp_path)
    with pytest.raises(errors.OutOfRange) as raised:
        asyncio.run(data_plane.infer(request([0.5, 0.0, 7.5, 0.0], AttestMode.SYNC)))
    message = raised.value.message
    assert "'x'" in message and "feature 2" in message and "7.5" in message and "[-1, 1]" in message
    assert errors.grpc_code(raised.value).name == "OUT_OF_RANGE"
    assert data_plane.proofs.records == {}  # nothing was queued
    # attest=none is a plain inference server: not limited
    response, record = asyncio.run(data_plane.infer(request([0.5, 0.0, 7.5, 0.0], AttestMode.NONE)))
    assert record is None and response.outputs[0].data.tolist() == [[1.0, 1.0]]


def test_the_proof_queue_is_bounded(tmp_path):
    data_plane = plane(tmp_path, max_queued=1)

    async def scenario():
        job = ProofJob("p1", "m", {"x": np.zeros((1, 4), np.float32)}, {"y": np.zeros((1, 2), np.float32)})
        await data_plane.proofs.create(SPEC, job)  # queued, not dispatched
        with pytest.raises(errors.ResourceExhausted, match="max_queued_proofs"):
            await data_plane.infer(request([0.1] * 4, AttestMode.ASYNC))
        response, record = await data_plane.infer(request([0.1] * 4, AttestMode.NONE))  # never limited
        assert record is None and response.outputs

    asyncio.run(scenario())


def test_each_api_key_has_its_share_of_the_proof_queue(tmp_path):
    """With auth on, one key cannot fill the whole queue: past its share it gets RESOURCE_EXHAUSTED
    while another key (and attest=none) still gets through; a finished proof frees its slot."""
    from serve.security import ANONYMOUS, Guard, Principal

    service = ProofService(str(tmp_path / "proofs"), {"m": SPEC}, provers={}, max_queued=8, max_queued_per_key=1)
    guard = Guard(auth_enabled=False, store=None)
    alice, bob = (Principal(k, frozenset({"predict"})) for k in ("alice", "bob"))

    def job(proof_id: str) -> ProofJob:
        return ProofJob(proof_id, "m", {"x": np.zeros((1, 4), np.float32)}, {"y": np.zeros((1, 2), np.float32)})

    async def as_caller(principal, proof_id: str):
        guard.scope(principal)  # what Ingress.admit does for each call (each in its own task)
        service.admit("m")
        return await service.create(SPEC, job(proof_id))

    async def scenario():
        await asyncio.create_task(as_caller(alice, "a1"))
        with pytest.raises(errors.ResourceExhausted, match="API key alice has 1 proofs queued"):
            await asyncio.create_task(as_caller(alice, "a2"))
        await asyncio.create_task(as_caller(bob, "b1"))  # another key: its own share
        for n in range(3):  # anonymous callers (auth off) are bound only by the whole queue
            await asyncio.create_task(as_caller(ANONYMOUS, f"n{n}"))
        await service._fail(job("a1"), "test: finished", "test")  # a finished proof frees alice's slot
        await asyncio.create_task(as_caller(alice, "a3"))

    asyncio.run(scenario())
    service.close()


def test_records_and_jobs_survive_for_a_restarted_owner(tmp_path):
    async def first_life():
        service = ProofService(str(tmp_path / "proofs"), {"m": SPEC}, provers={}, max_queued=8)
        job = ProofJob("p1", "m", {"x": np.ones((1, 4), np.float32)}, {"y": np.ones((1, 2), np.float32)})
        record = await service.create(SPEC, job)
        service.close()
        return record

    created = asyncio.run(first_life())
    with open(tmp_path / "proofs" / "jobs.log", "ab") as log:
        log.write(b'{"record": {"proof_id": "p2"')  # a line cut short by kill -9: skipped
    again = ProofService(str(tmp_path / "proofs"), {"m": SPEC}, provers={}, max_queued=8)
    assert again.get("p1") == created and created.status is ProofStatus.QUEUED and again.get("p2") is None
    record, job = ProofFiles(tmp_path / "proofs").logged_jobs()["p1"]
    assert record == created and job.inputs["x"].tolist() == [[1.0] * 4]


def test_a_keys_share_of_the_queue_survives_a_restart(tmp_path):
    """The job log keeps who asked: a restarted owner still counts alice's unfinished proof."""
    from serve.security import Guard, Principal

    guard = Guard(auth_enabled=False, store=None)
    alice = Principal("alice", frozenset({"predict"}))

    async def first_life():
        service = ProofService(str(tmp_path / "proofs"), {"m": SPEC}, provers={}, max_queued=8, max_queued_per_key=1)
        guard.scope(alice)
        service.admit("m")
        await service.create(SPEC, ProofJob("a1", "m", {"x": np.zeros((1, 4), np.float32)},
                                            {"y": np.zeros((1, 2), np.float32)}))
        service.close()

    asyncio.run(first_life())
    again = ProofService(str(tmp_path / "proofs"), {"m": SPEC}, provers={}, max_queued=8, max_queued_per_key=1)

    async def as_alice():
        guard.scope(alice)
        again.admit("m")

    with pytest.raises(errors.ResourceExhausted, match="API key alice has 1 proofs queued"):
        asyncio.run(as_alice())
    again.close()


class CountingProver:
    """Stands in for a Prover's DeploymentHandle (``prove.remote``): records the order proofs start
    in and how many ran at once; each takes 20 ms."""

    def __init__(self):
        self.prove, self.order, self.running, self.most = self, [], 0, 0

    async def remote(self, job):
        self.order.append(job.proof_id)  # the order proofs start in
        self.running += 1
        self.most = max(self.most, self.running)
        await asyncio.sleep(0.02)
        self.running -= 1
        return ProofOutcome(job.proof_id, ok=True, proof_json=b"{}", proof_hash="0x" + job.proof_id)


def test_jobs_are_proven_in_order_by_a_fixed_lane_of_workers(tmp_path):
    """Twenty async jobs and one sync job: proven in arrival order, two at a time (the model's
    in_flight), by two worker tasks whatever the queue's length; the sync caller gets its
    finished record; retiring the model stops the workers."""
    prover = CountingProver()

    async def scenario():
        service = ProofService(str(tmp_path / "proofs"), {"m": SPEC}, provers={"m": prover}, max_queued=64,
                               in_flight={"m": 2})
        before = len(asyncio.all_tasks())
        jobs = [ProofJob(f"p{n:02d}", "m", {"x": np.zeros((1, 4), np.float32)}, {"y": np.zeros((1, 2), np.float32)})
                for n in range(21)]
        for job in jobs[:20]:
            await service.create(SPEC, job)
            service.prove_later(job)
        assert len(asyncio.all_tasks()) - before == 2  # the lane's two workers, not a task per job
        await service.create(SPEC, jobs[20])
        record = await asyncio.wait_for(service.prove(jobs[20]), 10)
        assert record.status is ProofStatus.DONE and record.proof_hash == "0xp20"
        assert prover.order == [job.proof_id for job in jobs] and prover.most == 2
        await asyncio.wait_for(service.retire(("m", SPEC.model_id)), 5)
        await asyncio.sleep(0)
        assert len(asyncio.all_tasks()) == before  # the workers are gone with the model
        service.close()

    asyncio.run(scenario())


def test_a_proof_of_other_outputs_than_onnx_runtimes_is_failed_with_the_reason():
    """The Prover's check alone (no EZKL): proven outputs 0.5 away from ORT's, tolerance 0.1."""
    prover = object.__new__(ProverDeployment.func_or_class)
    prover.spec = SPEC
    job = ProofJob("p1", "m", {"x": np.zeros((1, 4), np.float32)}, {"y": np.array([[1.0, 2.0]], np.float32)})
    proof = SimpleNamespace(proof_hash="0xab")
    far = prover._check(job, proof, b"{}", {"y": np.array([[1.0, 2.5]])}, 0)
    assert not far.ok and "differs from ONNX Runtime's by 0.5" in far.error and far.proof_hash == "0xab"
    near = prover._check(job, proof, b"{}", {"y": np.array([[1.05, 2.0]])}, 0)
    assert near.ok and near.proven_outputs_match and near.proven_outputs["y"] == ((1, 2), (1.05, 2.0))


def test_response_tensors_carry_the_dtype_onnx_runtime_returned(tmp_path):
    """Outputs of the declared dtype go straight into the response; any other dtype keeps its own
    datatype (never relabelled as the declared one)."""
    proofs = ProofService(str(tmp_path / "proofs"), {"m": SPEC}, provers={}, max_queued=8)

    async def wider(inputs):
        return {"y": np.repeat(inputs["x"][:, :1].astype(np.float64) * 2, 2, axis=1)}

    for infer, datatype in ((double, "FP32"), (wider, "FP64")):
        data_plane = DataPlane({"m": SPEC}, {"m": infer}, proofs, AttestMode.NONE)
        response, _ = asyncio.run(data_plane.infer(request([0.25, 0.0, 0.0, 0.0], AttestMode.NONE)))
        (tensor,) = response.outputs
        assert tensor.datatype == datatype and tensor.data.tolist() == [[0.5, 0.5]]
