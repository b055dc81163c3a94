"""KServe v2 REST (the Open Inference Protocol over HTTP) on the app's HTTP port, with plain
`requests`: health, metadata, infer with attest none/async/sync, the proof verifying off chain,
and the same validation (and messages) as gRPC. Also: nothing the app opens listens beyond
127.0.0.1 on the default host."""

from __future__ import annotations

import json
import time

import grpc
import numpy as np
import pytest
import requests

from circuits import Proof
from serve.ports import free_port
from tests.e2e.serving_helpers import infer_request, ort_run, verify_in_subprocess
from tests.e2e.serving_sockets import listeners, socket_inodes

pytestmark = pytest.mark.e2e
MLP = "demo-mlp"


@pytest.fixture(scope="module")
def base(serving_app) -> str:
    ingress = serving_app.document["zkserve"]["ingress"]
    return f"http://{ingress['host']}:{ingress['http_port']}"


def body(rows: np.ndarray, attest: str | None = None, name: str = "features") -> dict:
    document = {"id": "req-1", "inputs": [{"name": name, "shape": list(rows.shape), "datatype": "FP32",
                                           "data": rows.ravel().tolist()}]}
    if attest:
        document["parameters"] = {"attest": attest}
    return document


def test_health_and_metadata(base):
    assert requests.get(f"{base}/v2/health/live", timeout=10).json() == {"live": True}
    assert requests.get(f"{base}/v2/health/ready", timeout=10).json() == {"ready": True}
    server = requests.get(f"{base}/v2", timeout=10).json()
    assert server["name"] == "zkserve" and "zkserve_attestation" in server["extensions"]
    metadata = requests.get(f"{base}/v2/models/{MLP}", timeout=10).json()
    assert metadata["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 16]}]
    assert {"name": "zk_proof", "datatype": "BYTES", "shape": [1]} in metadata["outputs"]
    assert requests.get(f"{base}/v2/models/{MLP}/versions/1/ready", timeout=10).json()["ready"] is True


def test_infer_none_matches_onnx_runtime(base, mlp_package):
    rows = np.random.default_rng(21).uniform(-1, 1, (3, 16)).astype(np.float32)
    answer = requests.post(f"{base}/v2/models/{MLP}/infer", json=body(rows, "none"), timeout=30)
    assert answer.status_code == 200, answer.text
    document = answer.json()
    assert document["model_name"] == MLP and document["id"] == "req-1"
    assert "proof_id" not in document["parameters"] and document["parameters"]["model_id"] == mlp_package.model_id
    (scores,) = document["outputs"]
    assert scores["name"] == "scores" and scores["shape"] == [3, 2] and scores["datatype"] == "FP32"
    np.testing.assert_allclose(np.asarray(scores["data"]).reshape(3, 2),
                               ort_run(mlp_package.onnx_path, "features", rows), rtol=1e-6)


def test_infer_sync_carries_a_proof_that_verifies_off_chain(base, mlp_package, tmp_path):
    rows = np.random.default_rng(22).uniform(-1, 1, (1, 16)).astype(np.float32)
    document = requests.post(f"{base}/v2/models/{MLP}/infer", json=body(rows, "sync"), timeout=300).json()
    parameters = document["parameters"]
    assert parameters["proof_status"] == "done" and parameters["proven_outputs_match"] is True
    proof_tensor = next(o for o in document["outputs"] if o["name"] == "zk_proof")
    assert proof_tensor["datatype"] == "BYTES" and proof_tensor["shape"] == [1]
    proof_json = proof_tensor["data"][0].encode()
    assert Proof.from_json(proof_json).proof_hash == parameters["proof_hash"]
    assert verify_in_subprocess(mlp_package.root, [proof_json], tmp_path) == [True]


def test_binary_tensor_extension_in_and_out(base, mlp_package, tmp_path):
    """Rows sent as raw FP32 bytes after the JSON; scores and the proof answered the same way."""
    rows = np.random.default_rng(23).uniform(-1, 1, (1, 16)).astype(np.float32)
    head = json.dumps({"inputs": [{"name": "features", "shape": [1, 16], "datatype": "FP32",
                                   "parameters": {"binary_data_size": rows.nbytes}}],
                       "parameters": {"attest": "sync", "binary_data_output": True}}).encode()
    answer = requests.post(f"{base}/v2/models/{MLP}/infer", data=head + rows.astype("<f4").tobytes(), timeout=300,
                           headers={"Inference-Header-Content-Length": str(len(head)),
                                    "Content-Type": "application/octet-stream"})
    assert answer.status_code == 200, answer.text
    split = int(answer.headers["Inference-Header-Content-Length"])
    document, binary = json.loads(answer.content[:split]), answer.content[split:]
    scores, proof = document["outputs"]
    assert scores["name"] == "scores" and "data" not in scores and scores["parameters"]["binary_data_size"] == 8
    np.testing.assert_allclose(np.frombuffer(binary[:8], "<f4").reshape(1, 2),
                               ort_run(mlp_package.onnx_path, "features", rows), rtol=1e-6)
    (length,) = np.frombuffer(binary[8:12], "<u4")  # a BYTES element: 4-byte length, then its bytes
    assert proof["parameters"]["binary_data_size"] == 4 + length == len(binary) - 8
    proof_json = binary[12:]
    assert Proof.from_json(proof_json).proof_hash == document["parameters"]["proof_hash"]
    assert verify_in_subprocess(mlp_package.root, [proof_json], tmp_path) == [True]
    short = requests.post(f"{base}/v2/models/{MLP}/infer", data=head + rows.tobytes()[:-4], timeout=30,
                          headers={"Inference-Header-Content-Length": str(len(head))})
    assert short.status_code == 400 and "binary_data_size" in short.json()["error"]


def test_infer_async_answers_at_once_then_the_proof_is_fetched(base, mlp_package):
    rows = np.random.default_rng(23).uniform(-1, 1, (1, 16)).astype(np.float32)
    document = requests.post(f"{base}/v2/models/{MLP}/infer", json=body(rows, "async"), timeout=30).json()
    parameters = document["parameters"]
    assert parameters["proof_status"] == "queued" and "zk_proof" not in [o["name"] for o in document["outputs"]]
    deadline = time.monotonic() + 180
    while True:
        record = requests.get(f"{base}/v2/proofs/{parameters['proof_id']}", timeout=10).json()
        if record["status"] in ("done", "failed") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert record["status"] == "done" and record["proven_outputs_match"] is True
    assert Proof.from_json(record["proof"].encode()).proof_hash == record["proof_hash"]


def test_bad_input_is_400_with_the_same_message_as_grpc(serving_app, base):
    rows = np.zeros((1, 15), np.float32)
    answer = requests.post(f"{base}/v2/models/{MLP}/infer", json=body(rows, "none"), timeout=30)
    assert answer.status_code == 400
    with pytest.raises(grpc.RpcError) as raised:
        serving_app.inference().ModelInfer(infer_request(MLP, "features", rows, attest="none"), timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert answer.json() == {"error": raised.value.details()} and "shape" in raised.value.details()
    not_json = requests.post(f"{base}/v2/models/{MLP}/infer", data=b"{oops", timeout=30)
    assert not_json.status_code == 400 and "not JSON" in not_json.json()["error"]


def test_unknown_model_is_404_and_too_large_is_413(serving_app, base):
    zeros = body(np.zeros((1, 16), np.float32))
    answer = requests.post(f"{base}/v2/models/no-such-model/infer", json=zeros, timeout=30)
    assert answer.status_code == 404 and "no-such-model" in answer.json()["error"]
    assert requests.get(f"{base}/v2/models/no-such-model", timeout=10).status_code == 404
    assert requests.get(f"{base}/v2/nowhere", timeout=10).status_code == 404
    limit = serving_app.document["zkserve"]["ingress"]["max_request_bytes"]
    huge = json.dumps(body(np.zeros((limit // 40, 16), np.float32))).encode()
    assert len(huge) > limit
    answer = requests.post(f"{base}/v2/models/{MLP}/infer", data=huge, timeout=60,
                           headers={"content-type": "application/json"})
    assert answer.status_code == 413 and "max_request_bytes" in answer.json()["error"]


def test_nothing_the_app_opens_listens_beyond_loopback(serving_app):
    """The ingress ports, and every listener the app's replica processes open, are on 127.0.0.1
    (Ray's core-worker server, which every Ray process has, binds the node's interfaces)."""
    ingress = serving_app.document["zkserve"]["ingress"]
    assert ingress["host"] == "127.0.0.1"
    ports = {int(ingress["port"]), int(ingress["http_port"])}
    by_port = [item for item in listeners() if item.port in ports]
    assert {item.port for item in by_port} == ports, by_port
    assert all(item.loopback for item in by_port), by_port

    replicas = app_replica_pids()
    assert any("Ingress" in title for title, _ in replicas.values()), replicas
    table = {item.inode: item for item in listeners()}
    open_beyond = []
    for pid, (title, core_worker_port) in replicas.items():
        for inode in socket_inodes(pid):
            item = table.get(inode)
            # Ray's own core-worker server (every Ray process has one) is Ray's, not the app's
            if item is not None and not item.loopback and item.port != core_worker_port:
                open_beyond.append((title, item))
    assert not open_beyond, open_beyond


def app_replica_pids() -> dict[int, tuple[str, int]]:
    """pid -> (class, Ray core-worker port) of the app's live replicas, from this cluster's GCS."""
    import ray

    return {info["Pid"]: (info["ActorClassName"], int(info["Address"]["Port"]))
            for info in ray._private.state.actors().values()
            if info.get("State") == "ALIVE" and str(info.get("ActorClassName", "")).startswith("ServeReplica:zkserve:")}


def test_a_taken_port_is_refused_with_its_number():
    """The REST/gRPC binders fail at once with the port in the message (no silent adoption)."""
    import asyncio
    import socket

    from serve.app.direct import start_rest_server

    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen(1)

        async def bind():
            await start_rest_server(lambda request: None, "127.0.0.1", port)

        with pytest.raises(RuntimeError, match=f"127.0.0.1:{port}"):
            asyncio.run(bind())
