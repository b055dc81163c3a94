"""The verifier service over real gRPC (child process), real anvil and real proofs:
Verify, Submit in both modes through to the contract and the consumer, Watch, errors."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from zkserve.v1 import verifier_pb2 as pb

from serve.chain.keys import ANVIL_DEV_KEY
from serve.chain.registry import to_bytes32
from serve.merkle import instances_hash
from serve.verifier.client import status_name
from tests.e2e.conftest import VerifierProcess, relabel, setup_registry, tamper_byte, tamper_output

pytestmark = pytest.mark.e2e
ZERO = b"\x00" * 32


@pytest.fixture(scope="module")
def stack(module_anvil, tmp_path_factory, mlp_package, cnn_package):
    """Registry with both demo models, and one verifier service for the module."""
    state_dir = tmp_path_factory.mktemp("verifier-home")
    registry = setup_registry(module_anvil.url, state_dir, [mlp_package, cnn_package])
    service = VerifierProcess(state_dir, module_anvil.url, [mlp_package.root, cnn_package.root])
    client = service.start()
    yield registry, service, client
    client.close()
    service.stop()


def is_proven(registry, package, proof, path, root) -> bool:
    """What a consumer contract asks the registry (ExampleConsumer: tests/e2e/test_consumer.py)."""
    return registry.contract.functions.isProven(
        to_bytes32(package.model_id), to_bytes32(proof.proof_hash), instances_hash(proof.instances),
        [to_bytes32(h) for h in path], to_bytes32(root)).call()


def rpc_error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def test_verify_accepts_a_real_proof(stack, mlp_package, mlp_proofs):
    _, _, client = stack
    proof = mlp_proofs[0]
    reply = client.verify(mlp_package.model_id, proof)
    assert reply.valid and not reply.reason
    assert reply.insecure_srs is mlp_package.insecure is True  # the demo's dev SRS travels with the answer
    assert reply.proof_hash == proof.proof_hash
    assert [int(i) for i in reply.instances] == proof.instances
    assert client.verify(mlp_package.name, proof).valid  # by package name too


@pytest.mark.parametrize("tamper", ["byte", "output", "other_model", "other_model_relabelled"])
def test_verify_and_submit_reject_tampered_proofs(stack, mlp_package, mlp_proofs, cnn_proof, tamper):
    _, _, client = stack
    proof = mlp_proofs[0]
    bad = {"byte": lambda: tamper_byte(proof), "output": lambda: tamper_output(proof),
           "other_model": lambda: cnn_proof,
           "other_model_relabelled": lambda: relabel(cnn_proof, mlp_package.model_id)}[tamper]()
    if tamper.startswith("other_model"):  # another circuit's shape: refused before EZKL sees it
        for call in (
            lambda: client.verify(mlp_package.model_id, bad),
            lambda: client.submit(mlp_package.model_id, bad),
        ):
            error = rpc_error(call)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "proofs of demo-mlp have" in error.details()
    else:
        reply = client.verify(mlp_package.model_id, bad)
        assert not reply.valid and reply.reason
        error = rpc_error(lambda: client.submit(mlp_package.model_id, bad))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "proof rejected" in error.details()
    if bad.proof_hash != proof.proof_hash:
        assert rpc_error(lambda: client.get(bad.proof_hash)).code() == grpc.StatusCode.NOT_FOUND


def test_bad_requests_get_actionable_statuses(stack, mlp_package, mlp_proofs, mlp_batch4_package):
    _, service, client = stack
    cases = [
        (lambda: client.verify("0x" + "ab" * 32, mlp_proofs[0]), grpc.StatusCode.NOT_FOUND, "no circuit package"),
        (lambda: client.verify(mlp_package.model_id, b"not json"), grpc.StatusCode.INVALID_ARGUMENT, "proof document"),
        (lambda: client.verify(mlp_package.model_id, b""), grpc.StatusCode.INVALID_ARGUMENT, "empty"),
        (lambda: client.get("0x1234"), grpc.StatusCode.INVALID_ARGUMENT, "64 hex"),
        (lambda: client.get("0x" + "00" * 32), grpc.StatusCode.NOT_FOUND, "no proof"),
    ]
    for call, code, text in cases:
        error = rpc_error(call)
        assert error.code() == code and text in error.details(), error.details()
    # a package the service knows but the registry does not: register it first
    other = VerifierProcess(service.state_dir, service.rpc_url, [mlp_batch4_package.root])
    other_client = other.start()
    try:
        proof = __import__("circuits").Prover(mlp_batch4_package).prove(__import__("numpy").zeros((1, 16)))
        error = rpc_error(lambda: other_client.submit(mlp_batch4_package.model_id, proof))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "zkserve register" in error.details()
    finally:
        other_client.close()
        other.stop()


def test_anchor_mode_end_to_end(stack, mlp_package, mlp_proofs):
    registry, _, client = stack
    proofs = mlp_proofs[1:4]
    submitted = [client.submit(mlp_package.model_id, p, mode="anchor") for p in proofs]
    assert all(s.attestation.status == pb.ATTESTATION_STATUS_PENDING for s in submitted)
    assert all(s.attestation.insecure_srs for s in submitted)
    assert client.submit(mlp_package.model_id, proofs[0]).already_submitted
    records = [client.wait_final(p.proof_hash, 60) for p in proofs]
    for proof, record in zip(proofs, records, strict=False):
        assert status_name(record) == "anchored", record
        assert record.tx_hash and record.block_number > 0 and record.merkle_root
        assert registry.is_anchored(record.leaf, list(record.merkle_path), record.merkle_root)
        assert is_proven(registry, mlp_package, proof, record.merkle_path, record.merkle_root)
    assert registry.attestation(proofs[0].proof_hash)["block_number"] == 0  # anchored, not attested


def test_onchain_mode_end_to_end_with_watch(stack, mlp_package, cnn_package, mlp_proofs, cnn_proof):
    registry, _, client = stack
    proof = mlp_proofs[4]
    client.submit(mlp_package.model_id, proof, mode="onchain")
    seen = [status_name(r) for r in client.watch(proof.proof_hash, timeout_s=60)]
    assert seen[-1] == "attested" and set(seen) <= {"pending", "attested"}
    record = client.get(proof.proof_hash)
    on_chain = registry.attestation(proof.proof_hash)
    assert on_chain["block_number"] == record.block_number > 0 and on_chain["model_id"] == mlp_package.model_id
    assert is_proven(registry, mlp_package, proof, [], ZERO)
    # another model through the same service
    client.submit(cnn_package.model_id, cnn_proof, mode="onchain")
    assert status_name(client.wait_final(cnn_proof.proof_hash, 60)) == "attested"


def test_metrics_count_proofs_by_status_and_rpcs_by_code(stack, mlp_package, mlp_proofs):
    import urllib.request

    _, service, client = stack
    client.submit(mlp_package.model_id, mlp_proofs[0])
    with pytest.raises(grpc.RpcError):
        client.verify("0x" + "00" * 32, mlp_proofs[0])
    with urllib.request.urlopen(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    assert 'zkserve_verifier_rpcs_total{code="OK",method="Submit"}' in text
    assert 'zkserve_verifier_rpcs_total{code="NOT_FOUND",method="Verify"}' in text
    assert "zkserve_verifier_proofs{status=" in text


def test_health_reflection_and_no_key_in_logs(stack):
    _, service, client = stack
    channel = grpc.insecure_channel(service.target)
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="zkserve.v1.Verifier"))
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for reply in replies for s in reply.list_services_response.service}
    assert "zkserve.v1.Verifier" in names and "grpc.health.v1.Health" in names
    channel.close()
    logs = service.log_text()
    assert "queued" in logs  # the log is real ...
    assert ANVIL_DEV_KEY[2:].lower() not in logs.lower()  # ... and holds no key
