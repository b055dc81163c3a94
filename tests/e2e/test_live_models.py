"""Live models on a running `zkserve up` (Ray Serve, the verifier service, anvil), driven by the
`zkserve models` CLI as a user runs it: a model is added (registered on chain before it takes
traffic), predicted with an attested proof that verifies, updated to a new version (a new
model_id), listed, and removed; meanwhile a client keeps sending requests to demo-mlp and every
one of them succeeds."""

from __future__ import annotations

import os
import threading
import time

import grpc
import numpy as np
import pytest
import requests
from inference import grpc_service_pb2 as oip
from inference import grpc_service_pb2_grpc as oip_grpc
from zkserve.v1 import attestation_pb2 as pb
from zkserve.v1 import attestation_pb2_grpc as pb_grpc
from zkserve.v1 import verifier_pb2 as verifier_pb

from circuits import Proof, verify_proof
from serve.oip_client import Prediction, infer_request
from serve.ports import free_port
from serve.protocol import native
from serve.protocol.types import ProofRecord, ProofStatus
from serve.verifier.client import VerifierClient
from tests.conftest import run_cli
from tests.e2e.conftest import dev_chain
from tests.e2e.test_lifecycle import PORT_SETTINGS, Up

pytestmark = pytest.mark.e2e

LIVE = "live-mlp"


class DemoTraffic(threading.Thread):
    """attest=none requests to demo-mlp, one after another, until stopped; every outcome kept."""

    def __init__(self, address: str, input_name: str, rows: np.ndarray):
        super().__init__(daemon=True)
        self.stub = oip_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(address))
        self.request = infer_request("demo-mlp", {input_name: rows[:1]}, "none")
        self.ok, self.failures = 0, []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                self.stub.ModelInfer(self.request, timeout=30)
                self.ok += 1
            except grpc.RpcError as error:
                self.failures.append(f"{error.code().name}: {error.details()}")
            time.sleep(0.01)


def cli_ok(env: dict, *args: str) -> str:
    done = run_cli(*args, env=env, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 0, f"zkserve {' '.join(args)} failed:\n{out[-3000:]}"
    return out


def index(stub) -> dict[str, tuple[str, str]]:
    return {m.name: (m.version, m.state) for m in stub.RepositoryIndex(oip.RepositoryIndexRequest(), timeout=30).models}


def wait_done(attestation, proof_id: str, timeout_s: float = 120) -> ProofRecord:
    deadline = time.monotonic() + timeout_s
    while True:
        record = native.decode_record(attestation.GetProof(pb.GetProofRequest(proof_id=proof_id), timeout=30))
        if record.status.finished or time.monotonic() > deadline:
            return record
        time.sleep(0.2)


def test_add_update_and_remove_a_model_while_the_demo_model_serves(tmp_path, mlp_package, mlp_batch4_package,
                                                                   mlp_rows):
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    ports = {f"ZKSERVE_{name}": str(free_port()) for name in PORT_SETTINGS}
    up = Up(state_dir, {**os.environ, **ports, "ZKSERVE_HOME": str(state_dir),
                        "ZKSERVE_SERVING_MODELS": f"[{mlp_package.root}]", "ZKSERVE_SERVING_PROVER_CORES": "1",
                        "ZKSERVE_VERIFIER_ANCHOR_MAX_AGE_S": "0.5", "RAYON_NUM_THREADS": "1"})
    try:
        up.start()
        _scenario(up, mlp_package, mlp_batch4_package, mlp_rows, tmp_path)
    finally:
        up.clean_up()


def _scenario(up: Up, mlp_package, batch4_package, rows: np.ndarray, tmp_path) -> None:
    from serve.chain.registry import Registry

    address = f"127.0.0.1:{up.port('INGRESS_PORT')}"
    channel = grpc.insecure_channel(address)
    stub, attestation = oip_grpc.GRPCInferenceServiceStub(channel), pb_grpc.AttestationStub(channel)
    input_name = mlp_package.inputs[0]["name"]
    registry = Registry.ensure(dev_chain(f"http://127.0.0.1:{up.port('CHAIN_ANVIL_PORT')}"), up.state_dir)
    assert not registry.is_registered(batch4_package.model_id)
    assert index(stub) == {"demo-mlp": ("1", "READY")}
    traffic = DemoTraffic(address, input_name, rows)
    traffic.start()

    # add: the demo MLP compiled at 4 rows per proof, served as live-mlp (a model_id new to the chain)
    started = time.monotonic()
    out = cli_ok(up.env, "models", "add", str(batch4_package.root), "--name", LIVE)
    assert f"registered on chain, serving {LIVE} version 1 ({batch4_package.model_id})" in out, out
    print(f"models add took {time.monotonic() - started:.1f} s")
    assert registry.is_registered(batch4_package.model_id)
    assert stub.ModelReady(oip.ModelReadyRequest(name=LIVE), timeout=30).ready
    assert list(stub.ModelMetadata(oip.ModelMetadataRequest(name=LIVE), timeout=30).versions) == ["1"]
    assert index(stub) == {"demo-mlp": ("1", "READY"), LIVE: ("1", "READY")}
    rest = requests.post(f"http://127.0.0.1:{up.port('INGRESS_HTTP_PORT')}/v2/repository/index", json={"ready": True},
                         timeout=30)
    assert rest.status_code == 200 and {m["name"] for m in rest.json()} == {"demo-mlp", LIVE}, rest.text

    four = rows[:4].astype(np.float32)
    response = stub.ModelInfer(infer_request(LIVE, {input_name: four}, "sync"), timeout=300)
    assert response.model_version == "1"
    prediction = Prediction.from_response(response)
    assert prediction.parameters["model_id"] == batch4_package.model_id
    assert prediction.parameters["proof_status"] == "done", prediction.parameters
    assert prediction.parameters["proven_outputs_match"] is True
    assert verify_proof(batch4_package, Proof.from_json(prediction.proof))
    # the app's submission found the copied package: the verifier anchored it under the new model
    with VerifierClient(f"127.0.0.1:{up.port('VERIFIER_PORT')}", timeout_s=30) as verifier:
        anchored = verifier.wait_final(prediction.parameters["proof_hash"], 90, not_yet_submitted_ok=True)
    assert anchored.status == verifier_pb.ATTESTATION_STATUS_ANCHORED, anchored
    assert anchored.model_id.lower() == batch4_package.model_id.lower()

    # update: live-mlp becomes the one-row demo MLP (another model_id) = version 2; a proof of
    # version 1 asked for just before finishes, by version 1's prover
    old = stub.ModelInfer(infer_request(LIVE, {input_name: four}, "async"), timeout=60)
    old_proof = Prediction.from_response(old).parameters["proof_id"]
    out = cli_ok(up.env, "models", "add", str(mlp_package.root), "--name", LIVE)
    assert f"serving {LIVE} version 2 ({mlp_package.model_id}), replacing {batch4_package.model_id}" in out, out
    record = wait_done(attestation, old_proof)
    assert record.status is ProofStatus.DONE and record.model_id == batch4_package.model_id, record
    assert list(stub.ModelMetadata(oip.ModelMetadataRequest(name=LIVE), timeout=30).versions) == ["2"]
    assert not stub.ModelReady(oip.ModelReadyRequest(name=LIVE, version="1"), timeout=30).ready
    one = oip.ModelInferRequest()
    one.CopyFrom(infer_request(LIVE, {input_name: rows[:1]}, "sync"))
    one.model_version = "1"
    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelInfer(one, timeout=30)
    assert raised.value.code() is grpc.StatusCode.NOT_FOUND and "version 2" in raised.value.details()
    one.model_version = "2"
    response = stub.ModelInfer(one, timeout=300)
    prediction = Prediction.from_response(response)
    assert response.model_version == "2" and prediction.parameters["model_id"] == mlp_package.model_id
    assert verify_proof(mlp_package, Proof.from_json(prediction.proof))

    out = cli_ok(up.env, "models", "list")
    assert LIVE in out and mlp_package.model_id in out and "READY" in out, out

    # remove: NOT_FOUND at once for new requests; a proof asked for just before still finishes
    last = stub.ModelInfer(infer_request(LIVE, {input_name: rows[:1]}, "async"), timeout=60)
    last_proof = Prediction.from_response(last).parameters["proof_id"]
    out = cli_ok(up.env, "models", "remove", LIVE)
    assert f"removed {LIVE} version 2" in out, out
    record = wait_done(attestation, last_proof)
    assert record.status is ProofStatus.DONE and verify_proof(mlp_package, Proof.from_json(record.proof)), record
    assert not stub.ModelReady(oip.ModelReadyRequest(name=LIVE), timeout=30).ready
    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelInfer(infer_request(LIVE, {input_name: rows[:1]}, "none"), timeout=30)
    assert raised.value.code() is grpc.StatusCode.NOT_FOUND
    assert f"model {LIVE} (version 2) was removed" in raised.value.details()
    assert index(stub) == {"demo-mlp": ("1", "READY")}
    removed_again = run_cli("models", "remove", LIVE, env=up.env, timeout=300)
    assert removed_again.returncode == 1 and f"no model {LIVE!r} is served" in removed_again.stderr

    traffic.halt.set()
    traffic.join(60)
    assert traffic.failures == [], traffic.failures[:5]
    assert traffic.ok > 20, f"only {traffic.ok} demo-mlp requests went through"
    print(f"{traffic.ok} demo-mlp requests, all OK, during add, update and remove")
