"""End to end: the real Ray Serve app over loopback gRPC, real ONNX Runtime, real EZKL proofs.

One app per session (tests/e2e/serving_fixtures.py). The concurrency test runs 32 clients
x 10 requests; one request per client asks for a synchronous proof (32 proofs), the rest
are plain predictions, which keeps the module within a few minutes on 2 cores.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from eth_hash.auto import keccak
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from inference import grpc_service_pb2 as oip
from zkserve.v1 import attestation_pb2 as pb

from circuits import Proof
from serve.oip_client import output_array, proof_bytes
from tests.e2e.serving_fixtures import SHARED_BATCH_MODEL, shared_batch_package
from tests.e2e.serving_helpers import infer_request, ort_run, verify_in_subprocess

pytestmark = pytest.mark.e2e
MLP, CNN = "demo-mlp", "demo-cnn"


@pytest.fixture(scope="module")
def stubs(serving_app):
    channel = serving_app.channel()
    yield serving_app.inference(channel), serving_app.attestation(channel)
    channel.close()


def rows_of(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.uniform(-1, 1, shape).astype(np.float32)


def test_sync_attest_returns_a_proof_that_verifies_elsewhere(stubs, mlp_package, tmp_path):
    inference, _ = stubs
    rows = rows_of(np.random.default_rng(1), (1, 16))
    response = inference.ModelInfer(infer_request(MLP, "features", rows, attest="sync"))

    params = response.parameters
    assert params["model_id"].string_param == mlp_package.model_id
    assert params["proof_status"].string_param == "done"
    assert params["proven_outputs_match"].bool_param is True
    np.testing.assert_allclose(
        output_array(response, "scores"), ort_run(mlp_package.onnx_path, "features", rows), rtol=1e-6
    )

    proof = Proof.from_json(proof_bytes(response))
    assert params["proof_hash"].string_param == proof.proof_hash == "0x" + keccak(proof.proof_bytes).hex()
    assert verify_in_subprocess(mlp_package.root, [proof_bytes(response)], tmp_path) == [True]


def test_typed_contents_work_like_raw_ones(stubs, cnn_package):
    inference, _ = stubs
    rows = rows_of(np.random.default_rng(2), (3, 1, 8, 8))
    response = inference.ModelInfer(infer_request(CNN, "image", rows, attest="none", raw=False))
    assert not response.raw_output_contents
    np.testing.assert_allclose(
        output_array(response, "logits"), ort_run(cnn_package.onnx_path, "image", rows), rtol=1e-6
    )
    assert "proof_id" not in response.parameters


def test_async_attest_answers_before_the_proof_then_streams_it(stubs, cnn_package):
    inference, attestation = stubs
    rows = rows_of(np.random.default_rng(3), (1, 1, 8, 8))
    response = inference.ModelInfer(infer_request(CNN, "image", rows, attest="async"))
    answered_at = time.time()
    proof_id = response.parameters["proof_id"].string_param
    assert proof_id and response.parameters["proof_status"].string_param == "queued"
    assert "zk_proof" not in [o.name for o in response.outputs]

    updates = list(attestation.WatchProof(pb.WatchProofRequest(proof_id=proof_id), timeout=120))
    statuses = [u.status for u in updates]
    assert statuses[-1] == pb.PROOF_STATUS_DONE and statuses == sorted(statuses), statuses
    final = updates[-1]
    # The order, from the server's own clock: the answer left before the proof was finished.
    assert final.created_at <= answered_at < final.finished_at
    assert final.proven_outputs_match
    np.testing.assert_allclose(
        np.asarray(final.proven_outputs[0].values),
        ort_run(cnn_package.onnx_path, "image", rows).ravel(),
        atol=cnn_package.tolerance,
    )

    fetched = attestation.GetProof(pb.GetProofRequest(proof_id=proof_id))
    assert fetched.proof == final.proof and fetched.proof_hash == final.proof_hash
    assert Proof.from_json(fetched.proof).proof_hash == fetched.proof_hash


def test_native_predict_sync(stubs, mlp_package):
    _, attestation = stubs
    rows = rows_of(np.random.default_rng(4), (1, 16))
    response = attestation.Predict(
        pb.PredictRequest(
            model=MLP,
            attest=pb.ATTEST_MODE_SYNC,
            inputs=[pb.Tensor(name="features", shape=[1, 16], values=rows.ravel().tolist())],
        )
    )
    assert response.model_id == mlp_package.model_id and response.proof_id
    assert response.proof.status == pb.PROOF_STATUS_DONE and response.proof.proven_outputs_match
    np.testing.assert_allclose(
        np.asarray(response.outputs[0].values), ort_run(mlp_package.onnx_path, "features", rows).ravel(), rtol=1e-6
    )


def test_shared_proof_batching_groups_concurrent_requests_into_one_proof(stubs):
    """`proof_batching: shared` on a batch-4 circuit: four clients, one proof, each response
    knowing its row; a partial batch would be padded (covered by tests/test_circuits.py)."""
    from circuits import decode_outputs, verify_proof

    package = shared_batch_package()
    _, attestation = stubs
    rows = rows_of(np.random.default_rng(7), (4, 16))

    def predict(row: np.ndarray) -> pb.PredictResponse:
        return attestation.Predict(
            pb.PredictRequest(
                model=SHARED_BATCH_MODEL,
                attest=pb.ATTEST_MODE_SYNC,
                inputs=[pb.Tensor(name="features", shape=[1, 16], values=row.ravel().tolist())],
            ),
            timeout=300,
        )

    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(predict, rows))
    assert len({r.proof.proof_hash for r in responses}) == 1, "the four requests should share one proof"
    assert sorted(r.proof.row_offset for r in responses) == [0, 1, 2, 3]
    proof = Proof.from_json(responses[0].proof.proof)
    assert verify_proof(package, proof)
    proven = decode_outputs(package, proof)[0]
    for row, response in zip(rows, responses, strict=False):
        assert response.proof.proven_outputs_match
        expected = ort_run(package.onnx_path, "features", row[None, :])
        assert np.max(np.abs(proven[response.proof.row_offset] - expected)) <= package.tolerance
        np.testing.assert_allclose(np.asarray(response.outputs[0].values), expected.ravel(), rtol=1e-6)


def test_32_clients_x_10_requests(serving_app, mlp_package, tmp_path):
    clients, per_client = 32, 10
    reference_rows = rows_of(np.random.default_rng(5), (clients * per_client, 16))
    expected = ort_run(mlp_package.onnx_path, "features", reference_rows)
    proofs: dict[int, bytes] = {}
    failures: list[str] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        stub = serving_app.inference()
        for step in range(per_client):
            n = index * per_client + step
            attest = "sync" if step == index % per_client else "none"  # one proof per client
            response = stub.ModelInfer(
                infer_request(MLP, "features", reference_rows[n : n + 1], attest=attest), timeout=240
            )
            if not np.allclose(output_array(response, "scores"), expected[n : n + 1], rtol=1e-6):
                with lock:
                    failures.append(f"request {n}: wrong outputs")
            if attest == "sync":
                if not response.parameters["proven_outputs_match"].bool_param:
                    failures.append(f"request {n}: proven outputs disagree")
                proofs[n] = proof_bytes(response)

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    assert not failures, failures[:5]
    assert len(proofs) == clients
    assert all(verify_in_subprocess(mlp_package.root, list(proofs.values()), tmp_path))


BAD_CASES = {
    "unknown model": (
        lambda: infer_request("no-such-model", "features", np.zeros((1, 16), np.float32)),
        grpc.StatusCode.NOT_FOUND,
        "no-such-model",
    ),
    "wrong shape": (
        lambda: infer_request(MLP, "features", np.zeros((1, 15), np.float32)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "shape",
    ),
    "wrong dtype": (
        lambda: infer_request(MLP, "features", np.zeros((1, 16), np.float64), datatype="FP64"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "datatype",
    ),
    "wrong input name": (
        lambda: infer_request(MLP, "image", np.zeros((1, 16), np.float32)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "no input named",
    ),
    "raw bytes short": (lambda: _short_raw(), grpc.StatusCode.INVALID_ARGUMENT, "bytes"),
    "NaN": (
        lambda: infer_request(MLP, "features", np.full((1, 16), np.nan, np.float32)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "NaN",
    ),
    "inf": (
        lambda: infer_request(MLP, "features", np.full((1, 16), np.inf, np.float32)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "infinite",
    ),
    "too many inputs": (lambda: _two_inputs(), grpc.StatusCode.INVALID_ARGUMENT, "takes 1 input"),
    "over size limit": (
        lambda: infer_request(MLP, "features", np.zeros((80_000, 16), np.float32)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "max_request_bytes",
    ),
    "attest not a mode": (
        lambda: infer_request(MLP, "features", np.zeros((1, 16), np.float32), attest="maybe"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "attest",
    ),
    "attest not a string": (lambda: _attest_int(), grpc.StatusCode.INVALID_ARGUMENT, "attest"),
    "attested rows over the circuit batch": (
        lambda: infer_request(MLP, "features", np.zeros((4, 16), np.float32), attest="sync"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "at most",
    ),
}


def _short_raw():
    request = infer_request(MLP, "features", np.zeros((1, 16), np.float32))
    request.raw_input_contents[0] = b"\0" * 10
    return request


def _two_inputs():
    request = infer_request(MLP, "features", np.zeros((1, 16), np.float32))
    request.inputs.add(name="extra", datatype="FP32", shape=[1, 16])
    request.raw_input_contents.append(np.zeros((1, 16), np.float32).tobytes())
    return request


def _attest_int():
    request = infer_request(MLP, "features", np.zeros((1, 16), np.float32))
    request.parameters["attest"].int64_param = 2
    return request


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_gets_a_clear_status_and_the_server_keeps_serving(stubs, case):
    inference, _ = stubs
    make, code, words = BAD_CASES[case]
    with pytest.raises(grpc.RpcError) as raised:
        inference.ModelInfer(make(), timeout=60)
    assert raised.value.code() == code, raised.value.details()
    assert words in raised.value.details()
    assert "Traceback" not in raised.value.details()
    ok = inference.ModelInfer(infer_request(MLP, "features", np.zeros((1, 16), np.float32), attest="none"))
    assert output_array(ok, "scores").shape == (1, 2)


def test_unknown_proof_id_is_not_found(stubs):
    _, attestation = stubs
    for call in (attestation.GetProof, lambda r: list(attestation.WatchProof(r))):
        with pytest.raises(grpc.RpcError) as raised:
            call(
                pb.GetProofRequest(proof_id="nope")
                if call is attestation.GetProof
                else pb.WatchProofRequest(proof_id="nope")
            )
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_metadata_list_models_health_and_reflection(serving_app, stubs, mlp_package):
    inference, attestation = stubs
    assert inference.ServerLive(oip.ServerLiveRequest()).live
    assert inference.ModelReady(oip.ModelReadyRequest(name=MLP)).ready
    assert not inference.ModelReady(oip.ModelReadyRequest(name="nope")).ready
    metadata = inference.ModelMetadata(oip.ModelMetadataRequest(name=MLP))
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [("features", "FP32", [-1, 16])]

    models = {m.name: m for m in attestation.ListModels(pb.ListModelsRequest()).models}
    assert set(models) == {MLP, CNN, SHARED_BATCH_MODEL}
    assert models[SHARED_BATCH_MODEL].circuit_batch_size == 4
    assert models[MLP].model_id == mlp_package.model_id
    assert models[MLP].providers == ["CPUExecutionProvider"]  # no GPU on the test machine
    assert models[MLP].proofs_done >= 1

    channel = serving_app.channel()
    health = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService")
    )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    answer = next(reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    names = {s.name for s in answer.list_services_response.service}
    assert {"inference.GRPCInferenceService", "zkserve.v1.Attestation", "grpc.health.v1.Health"} <= names


def test_proofs_survive_an_ingress_restart_and_unfinished_ones_are_proven(serving_app, stubs):
    """The ingress owns the proof service: kill -9 its replica right after an async answer; the
    replacement reloads every record from disk and proves the unfinished job again."""
    import ray

    inference, attestation = stubs
    rng = np.random.default_rng(6)
    done = inference.ModelInfer(infer_request(MLP, "features", rows_of(rng, (1, 16)), attest="sync"))
    done_id = done.parameters["proof_id"].string_param
    pending = inference.ModelInfer(infer_request(CNN, "image", rows_of(rng, (1, 1, 8, 8)), attest="async"))
    pending_id = pending.parameters["proof_id"].string_param
    actors = [a for a in ray.util.list_named_actors(all_namespaces=True) if "#Ingress#" in a["name"]]
    assert len(actors) == 1
    ray.kill(ray.get_actor(actors[0]["name"], namespace=actors[0]["namespace"]), no_restart=True)

    deadline = time.monotonic() + 180
    while True:  # Serve replaces the replica on the same ports; it reloads the records from disk
        alive = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True) if "#Ingress#" in a["name"]]
        if actors[0]["name"] in alive or not alive:
            assert time.monotonic() < deadline, "the ingress replica was not replaced"
            time.sleep(1)
            continue
        try:
            record = attestation.GetProof(pb.GetProofRequest(proof_id=done_id), timeout=10)
            break
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    assert record.status == pb.PROOF_STATUS_DONE
    assert record.proof == proof_bytes(done)
    updates = list(attestation.WatchProof(pb.WatchProofRequest(proof_id=pending_id), timeout=180))
    assert updates[-1].status == pb.PROOF_STATUS_DONE and updates[-1].proven_outputs_match, updates[-1]


def test_predict_and_status_commands(serving_app, mlp_package, tmp_path):
    """The CLI client against the running app: an attested prediction, a bad input, the status."""
    import json

    from tests.conftest import run_cli

    rows = rows_of(np.random.default_rng(11), (1, 16))
    np.save(tmp_path / "row.npy", rows)
    proof_file = tmp_path / "proof.json"
    done = run_cli(
        "predict",
        MLP,
        "--input",
        str(tmp_path / "row.npy"),
        "--attest",
        "sync",
        "--proof-out",
        str(proof_file),
        "--address",
        serving_app.address,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    np.testing.assert_allclose(result["outputs"]["scores"], ort_run(mlp_package.onnx_path, "features", rows), rtol=1e-6)
    proof = Proof.load(proof_file)
    assert result["proof_hash"] == proof.proof_hash and result["proven_outputs_match"] is True
    assert verify_in_subprocess(mlp_package.root, [proof_file.read_bytes()], tmp_path) == [True]

    np.save(tmp_path / "bad.npy", rows_of(np.random.default_rng(12), (1, 15)))
    bad = run_cli("predict", MLP, "--input", str(tmp_path / "bad.npy"), "--address", serving_app.address)
    assert bad.returncode == 1 and "INVALID_ARGUMENT" in bad.stderr and "Traceback" not in bad.stderr

    status = run_cli("status", "--address", serving_app.address)
    assert status.returncode == 0, status.stderr
    assert MLP in status.stdout and "CPUExecutionProvider" in status.stdout and "proofs     queued" in status.stdout


def test_an_attested_row_outside_the_domain_is_refused_before_proving(stubs, serving_app, tmp_path):
    """demo-mlp is proven on [-1, 1]: at 50 a proof's outputs would differ from ONNX Runtime's.
    The attested row is refused before any proving, naming the input, feature, value and domain
    (gRPC and `zkserve predict`); the same row with attest=none is answered (not limited)."""
    from tests.conftest import run_cli

    inference, _ = stubs
    rows = np.full((1, 16), 0.5, np.float32)
    rows[0, 3] = 50.0
    with pytest.raises(grpc.RpcError) as refused:
        inference.ModelInfer(infer_request(MLP, "features", rows, attest="sync"), timeout=300)
    details = refused.value.details()
    assert refused.value.code() == grpc.StatusCode.OUT_OF_RANGE, details
    assert "'features'" in details and "feature 3" in details and "is 50" in details and "[-1, 1]" in details
    answered = inference.ModelInfer(infer_request(MLP, "features", rows, attest="none"), timeout=60)
    assert answered.outputs[0].name == "scores"

    np.save(tmp_path / "far.npy", rows)
    done = run_cli("predict", MLP, "--input", str(tmp_path / "far.npy"), "--attest", "sync",
                   "--address", serving_app.address)
    assert done.returncode == 1 and "OUT_OF_RANGE" in done.stderr and "feature 3" in done.stderr, done.stderr
