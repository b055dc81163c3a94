"""The served-model table without a server: versions of a name, the NOT_FOUND of a removed or
replaced model, and a removed version retired only once its requests and proofs have finished."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import numpy as np
import pytest

from serve import errors
from serve.app.dataplane import DataPlane
from serve.app.proofs import ProofService
from serve.app.prover import ProofOutcome
from serve.protocol.types import AttestMode, InferRequest, ProofStatus, Tensor
from tests.test_dataplane import SPEC, double

NEW = replace(SPEC, model_id="0x2")  # another version of the model "m"


class GatedProver:
    """Stands in for a Prover's DeploymentHandle (``prove.remote``): each proof waits for ``gate``."""

    def __init__(self):
        self.gate = asyncio.Event()
        self.proved: list[str] = []
        self.prove = self

    async def remote(self, job):
        await self.gate.wait()
        self.proved.append(job.proof_id)
        return ProofOutcome(job.proof_id, ok=True, proof_json=b"{}", proof_hash="0xab")


def request(attest: AttestMode, version: str = "") -> InferRequest:
    return InferRequest("m", (Tensor("x", "FP32", np.zeros((1, 4), np.float32)),), version=version, attest=attest)


def test_a_new_model_id_under_a_served_name_is_the_next_version(tmp_path):
    proofs = ProofService(str(tmp_path / "proofs"), {"m": SPEC}, provers={}, max_queued=8)
    plane = DataPlane({"m": SPEC}, {"m": double}, proofs, AttestMode.NONE)
    assert plane.add(SPEC, double) == (1, None)  # the same model_id again changes nothing
    assert plane.add(NEW, double) == (2, SPEC)
    assert plane.spec("m", "2") is NEW and plane.spec("m", "0x2") is NEW and plane.spec("m") is NEW
    with pytest.raises(errors.NotFound, match=r"served at version 2 \(model_id 0x2\), not version '1'"):
        plane.spec("m", "1")
    response, _ = asyncio.run(plane.infer(request(AttestMode.NONE)))
    assert response.version == "2" and response.parameters["model_id"] == "0x2"


def test_a_removed_model_answers_not_found_saying_so(tmp_path):
    proofs = ProofService(str(tmp_path / "proofs"), {"m": SPEC}, provers={}, max_queued=8)
    plane = DataPlane({"m": SPEC}, {"m": double}, proofs, AttestMode.NONE)
    assert plane.remove("m") is SPEC
    with pytest.raises(errors.NotFound) as raised:
        asyncio.run(plane.infer(request(AttestMode.NONE)))
    assert "model m (version 1) was removed from this server; models: none" in raised.value.message
    assert errors.grpc_code(raised.value).name == "NOT_FOUND"
    with pytest.raises(errors.NotFound, match="is not served here"):
        plane.spec("other")
    assert plane.add(SPEC, double) == (1, None)  # the same model added back: version 1 again


def test_retiring_a_removed_version_waits_for_its_proofs_in_flight(tmp_path):
    async def scenario():
        prover = GatedProver()
        proofs = ProofService(str(tmp_path / "proofs"), {"m": SPEC}, provers={"m": prover}, max_queued=8)
        plane = DataPlane({"m": SPEC}, {"m": double}, proofs, AttestMode.NONE)
        _, record = await plane.infer(request(AttestMode.ASYNC))
        plane.remove("m")
        retired = asyncio.create_task(proofs.retire(("m", SPEC.model_id)))
        await asyncio.sleep(0.1)
        assert not retired.done() and proofs.unfinished(("m", SPEC.model_id)) == 1  # still proving
        prover.gate.set()
        await asyncio.wait_for(retired, 5)
        assert proofs.get(record.proof_id).status is ProofStatus.DONE and prover.proved == [record.proof_id]
        assert ("m", SPEC.model_id) not in proofs.provers
        proofs.close()

    asyncio.run(scenario())


def test_an_old_versions_proof_goes_to_its_own_prover_after_an_update(tmp_path):
    async def scenario():
        old_prover, new_prover = GatedProver(), GatedProver()
        proofs = ProofService(str(tmp_path / "proofs"), {"m": SPEC}, provers={"m": old_prover}, max_queued=8)
        plane = DataPlane({"m": SPEC}, {"m": double}, proofs, AttestMode.NONE)
        _, old = await plane.infer(request(AttestMode.ASYNC))
        proofs.add_model(NEW, new_prover, in_flight=2)
        plane.add(NEW, double)
        _, new = await plane.infer(request(AttestMode.ASYNC))
        old_prover.gate.set()
        new_prover.gate.set()
        await asyncio.wait_for(proofs.retire(("m", SPEC.model_id)), 5)
        assert old_prover.proved == [old.proof_id] and old.model_id == "0x1"
        await asyncio.wait_for(proofs.wait_change(new.proof_id, ProofStatus.QUEUED), 5)
        for _ in range(50):
            if proofs.get(new.proof_id).status is ProofStatus.DONE:
                break
            await asyncio.sleep(0.02)
        assert new_prover.proved == [new.proof_id] and proofs.get(new.proof_id).model_id == "0x2"
        proofs.close()

    asyncio.run(scenario())


def test_joining_up_fails_clearly_without_a_running_up(tmp_path, monkeypatch):
    """`zkserve models` finds up's Ray cluster through the state directory; no cluster is started here."""
    import json

    from serve.app import live
    from serve.ports import free_port
    from serve.settings import Settings

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    settings = Settings(state_dir=tmp_path)
    with pytest.raises(live.LiveModelError, match="no running `zkserve up` recorded .* start `zkserve up`"):
        live.connect(settings)
    settings.paths.ray_address.parent.mkdir(parents=True)
    settings.paths.ray_address.write_text("garbage")
    with pytest.raises(live.LiveModelError, match="is not what `zkserve up` writes"):
        live.connect(settings)
    closed = f"127.0.0.1:{free_port()}"
    settings.paths.ray_address.write_text(json.dumps({"address": closed, "auth_mode": "token"}))
    assert live.ray_address(settings) == (closed, "token")
    with pytest.raises(live.LiveModelError, match=f"at {closed} is not reachable: is `zkserve up` still running"):
        live.connect(settings)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert live.ray_address(settings)[0] == "10.0.0.1:6379"  # an operator's cluster wins


def test_a_live_model_name_must_fit_urls_and_application_names(tmp_path):
    from serve.app import live
    from serve.settings import Settings

    for bad in ("a/b", "", "-x", "x" * 65, "sp ace"):
        with pytest.raises(live.LiveModelError, match="use letters, digits"):
            live.add(Settings(state_dir=tmp_path), package=None, name=bad)
