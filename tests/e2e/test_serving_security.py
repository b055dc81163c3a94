"""The serving ingress's network surface through real `zkserve up` stacks (Ray Serve app, the
verifier service, anvil; the demo MLP only): API keys, rights and quotas on gRPC and on REST,
TLS on both, health open, reflection off, an attested request whose proof reaches a verifier
that wants a key, what every process of a default stack listens on, and the refusal to open an
unauthenticated port beyond loopback."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import psutil
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from inference import grpc_service_pb2 as oip
from inference import grpc_service_pb2_grpc as oip_grpc
from zkserve.v1 import attestation_pb2 as pb
from zkserve.v1 import attestation_pb2_grpc as pb_grpc

from serve.ports import free_port
from serve.security import KeyStore
from serve.verifier.client import TOKEN_ENV, VerifierClient, status_name
from tests.certs import self_signed
from tests.e2e.test_lifecycle import PORT_SETTINGS, Up

pytestmark = pytest.mark.e2e
FORGED = "zks_0123456789ab.forged"
# the ingress's default quota for keys that carry none of their own: one call, then one per 20 s
DEFAULT_RATE = 0.05


def stack_env(state_dir: Path, package, **settings) -> dict[str, str]:
    """A `zkserve up` environment on free ports and its own state directory; ``settings`` are
    ``SECTION_KEY=value`` overrides (``ZKSERVE_`` prefixed here)."""
    ports = {f"ZKSERVE_{name}": str(free_port()) for name in PORT_SETTINGS}
    env = {**os.environ, **ports, "ZKSERVE_HOME": str(state_dir), "ZKSERVE_SERVING_MODELS": f"[{package.root}]",
           "ZKSERVE_SERVING_PROVER_CORES": "1", "RAYON_NUM_THREADS": "1",
           **{f"ZKSERVE_{key}": str(value) for key, value in settings.items()}}
    for inherited in ("RAY_ADDRESS", TOKEN_ENV):  # a stack of its own; tokens only where a test gives them
        env.pop(inherited, None)
    return env


def stop(up: Up) -> None:
    if up.process is not None and up.process.poll() is None:
        up.process.send_signal(signal.SIGTERM)
        try:
            up.process.wait(30)
        except subprocess.TimeoutExpired:
            pass
    up.clean_up()


@dataclass
class SecureStack:
    up: Up
    cert: Path
    store: KeyStore
    tokens: dict[str, str]
    key_ids: dict[str, str]

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.up.port('INGRESS_PORT')}"

    @property
    def rest(self) -> str:
        return f"https://127.0.0.1:{self.up.port('INGRESS_HTTP_PORT')}"

    @property
    def verifier_target(self) -> str:
        return f"127.0.0.1:{self.up.port('VERIFIER_PORT')}"

    def channel(self) -> grpc.Channel:
        return grpc.secure_channel(self.grpc_target, grpc.ssl_channel_credentials(self.cert.read_bytes()))

    def auth(self, name: str | None) -> tuple:
        token = FORGED if name == "forged" else self.tokens.get(name or "")
        return (("authorization", f"Bearer {token}"),) if token else ()

    def get(self, path: str, key: str | None = None, **kwargs) -> requests.Response:
        return requests.get(self.rest + path, headers=dict(self.auth(key)), verify=str(self.cert), timeout=30,
                            **kwargs)

    def post(self, path: str, body: dict, key: str | None = None) -> requests.Response:
        return requests.post(self.rest + path, json=body, headers=dict(self.auth(key)), verify=str(self.cert),
                             timeout=60)


@pytest.fixture(scope="module")
def secure(tmp_path_factory, mlp_package):
    """One `up` with keys and TLS on the ingress and on the verifier (one key store, one
    self-signed certificate), and a default quota on the ingress."""
    root = tmp_path_factory.mktemp("secure-serving")
    state_dir = root / "state"
    state_dir.mkdir()
    cert, key = self_signed(root)
    store = KeyStore(state_dir / "auth" / "keys.json")
    made = {name: store.create(name, rights, rate) for name, rights, rate in [
        ("client", ["predict"], 1000.0), ("auditor", ["verify"], 1000.0), ("slow", ["predict"], None),
        ("leaver", ["predict"], 1000.0)]}
    env = stack_env(state_dir, mlp_package, INGRESS_AUTH_ENABLED="true", INGRESS_TLS_CERT_FILE=cert,
                    INGRESS_TLS_KEY_FILE=key, INGRESS_REQUESTS_PER_S=DEFAULT_RATE, INGRESS_BURST_S=1,
                    VERIFIER_AUTH_ENABLED="true", VERIFIER_TLS_CERT_FILE=cert, VERIFIER_TLS_KEY_FILE=key,
                    VERIFIER_ANCHOR_MAX_AGE_S=1, SERVING_DEFAULT_ATTEST="none")
    up = Up(state_dir, env)
    try:
        up.start()
        yield SecureStack(up, cert, store, {name: token for name, (_, token) in made.items()},
                          {name: api_key.key_id for name, (api_key, _) in made.items()})
    finally:
        stop(up)


def rpc_error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def metadata_call(stub, name: str, auth: tuple):
    return stub.ModelMetadata(oip.ModelMetadataRequest(name=name), metadata=auth, timeout=30)


def test_grpc_keys_rights_and_revocation_with_health_open(secure, mlp_package):
    channel = secure.channel()
    inference = oip_grpc.GRPCInferenceServiceStub(channel)
    attestation = pb_grpc.AttestationStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    model = mlp_package.name
    # health and liveness: no token needed
    assert health.Check(health_pb2.HealthCheckRequest(service=""), timeout=30).status == \
        health_pb2.HealthCheckResponse.SERVING
    assert inference.ServerLive(oip.ServerLiveRequest(), timeout=30).live
    cases = [
        (None, grpc.StatusCode.UNAUTHENTICATED, "authorization: Bearer"),
        ("forged", grpc.StatusCode.UNAUTHENTICATED, "unknown or revoked"),
        ("auditor", grpc.StatusCode.PERMISSION_DENIED, "'predict' right"),
    ]
    for key, code, text in cases:
        for call in (lambda auth: metadata_call(inference, model, auth),
                     lambda auth: attestation.ListModels(pb.ListModelsRequest(), metadata=auth, timeout=30)):
            error = rpc_error(lambda call=call, key=key: call(secure.auth(key)))
            assert error.code() == code and text in error.details(), (key, error.code(), error.details())
    # a server-streaming method passes the same guard before its first message
    watch = lambda key: list(attestation.WatchProof(pb.WatchProofRequest(proof_id="no-such-proof"),  # noqa: E731
                                                    metadata=secure.auth(key), timeout=30))
    assert rpc_error(lambda: watch(None)).code() == grpc.StatusCode.UNAUTHENTICATED
    assert rpc_error(lambda: watch("auditor")).code() == grpc.StatusCode.PERMISSION_DENIED
    assert rpc_error(lambda: watch("client")).code() == grpc.StatusCode.NOT_FOUND  # admitted, then looked up
    assert metadata_call(inference, model, secure.auth("client")).name == model
    assert [m.name for m in attestation.ListModels(pb.ListModelsRequest(), metadata=secure.auth("client"),
                                                   timeout=30).models] == [model]

    assert metadata_call(inference, model, secure.auth("leaver")).name == model
    secure.store.revoke(secure.key_ids["leaver"])  # the running ingress sees the file change
    error = rpc_error(lambda: metadata_call(inference, model, secure.auth("leaver")))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED and "unknown or revoked" in error.details()
    answer = secure.get(f"/v2/models/{model}", key="leaver")
    assert answer.status_code == 401 and "unknown or revoked" in answer.json()["error"]
    channel.close()


def test_rest_401_403_with_json_errors_and_health_open(secure, mlp_package, mlp_rows):
    model = mlp_package.name
    assert secure.get("/v2/health/live").json() == {"live": True}  # https, no token
    assert secure.get("/v2/health/ready").status_code == 200
    body = {"inputs": [{"name": "features", "shape": [1, 16], "datatype": "FP32",
                        "data": mlp_rows[:1].astype(np.float32).ravel().tolist()}]}
    for key, status, text in [(None, 401, "authorization: Bearer"), ("forged", 401, "unknown or revoked"),
                              ("auditor", 403, "'predict' right")]:
        for answer in (secure.get(f"/v2/models/{model}", key=key), secure.post(f"/v2/models/{model}/infer", body, key)):
            assert answer.status_code == status, (key, answer.status_code, answer.text)
            assert answer.headers["content-type"] == "application/json" and text in answer.json()["error"]
    answer = secure.post(f"/v2/models/{model}/infer", body, "client")
    assert answer.status_code == 200, answer.text
    assert [output["name"] for output in answer.json()["outputs"]] == ["scores"]


def test_quota_is_one_bucket_per_key_across_grpc_and_rest(secure, mlp_package):
    """The key "slow" carries no rate of its own: the ingress's requests_per_s applies."""
    inference = oip_grpc.GRPCInferenceServiceStub(secure.channel())
    assert metadata_call(inference, mlp_package.name, secure.auth("slow")).name == mlp_package.name
    error = rpc_error(lambda: metadata_call(inference, mlp_package.name, secure.auth("slow")))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    assert f"{DEFAULT_RATE:g} requests/s" in error.details() and "retry in" in error.details()
    answer = secure.get(f"/v2/models/{mlp_package.name}", key="slow")
    assert answer.status_code == 429 and "quota" in answer.json()["error"], answer.text
    assert metadata_call(inference, mlp_package.name, secure.auth("client")).name == mlp_package.name  # others unharmed


def test_plaintext_clients_refused_and_reflection_off(secure):
    plain = grpc.insecure_channel(secure.grpc_target)
    error = rpc_error(lambda: health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=10))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    plain.close()
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{secure.up.port('INGRESS_HTTP_PORT')}/v2/health/live", timeout=10)
    # reflection would list the services to anyone: with auth on it is not served at all
    reflection = reflection_pb2_grpc.ServerReflectionStub(secure.channel())
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    error = rpc_error(lambda: list(reflection.ServerReflectionInfo(iter([request]), metadata=secure.auth("client"),
                                                                   timeout=10)))
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED


def test_attested_request_reaches_the_guarded_verifier(secure, mlp_package, mlp_rows):
    attestation = pb_grpc.AttestationStub(secure.channel())
    request = pb.PredictRequest(model=mlp_package.name, attest=pb.ATTEST_MODE_SYNC,
                                inputs=[pb.Tensor(name="features", shape=[1, 16], values=mlp_rows[0].ravel().tolist())])
    response = attestation.Predict(request, metadata=secure.auth("client"), timeout=300)
    assert response.proof.status == pb.PROOF_STATUS_DONE and response.proof.proof_hash, response.proof
    proof_hash = response.proof.proof_hash

    # the app submitted it with a key of its own, made for this run with the `submit` right only
    app_keys = [key for key in secure.store.api_keys() if key.name == "zkserve-app"]
    assert len(app_keys) == 1 and app_keys[0].active and app_keys[0].rights == ("submit",)
    with VerifierClient(secure.verifier_target, timeout_s=10, retries=0, root_cert=secure.cert) as anonymous:
        error = rpc_error(lambda: anonymous.get(proof_hash))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    with VerifierClient(secure.verifier_target, timeout_s=10, retries=0, root_cert=secure.cert,
                        token=secure.tokens["auditor"]) as client:
        deadline = time.monotonic() + 90
        while True:
            try:
                record = client.get(proof_hash)
                break
            except grpc.RpcError as error:  # NOT_FOUND while the app's Submit is on its way
                assert error.code() == grpc.StatusCode.NOT_FOUND, error
                assert time.monotonic() < deadline, f"{proof_hash} never reached the verifier"
                time.sleep(0.5)
        assert status_name(record) in ("pending", "anchored"), record
        assert status_name(client.wait_final(proof_hash, 60)) == "anchored"


def test_cli_uses_the_api_key_and_the_ingress_certificate(secure, mlp_package, mlp_rows, tmp_path):
    rows = tmp_path / "rows.npy"
    np.save(rows, mlp_rows[:1].astype(np.float32))
    command = [sys.executable, "-m", "serve.cli", "predict", mlp_package.name, "--input", str(rows), "--attest", "none"]
    refused = subprocess.run(command, env=secure.up.env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stdout + refused.stderr, refused
    done = subprocess.run(command, env={**secure.up.env, TOKEN_ENV: secure.tokens["client"]}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(json.loads(done.stdout)["outputs"]["scores"][0]) > 0


def test_stopping_up_revokes_the_apps_verifier_key(secure):
    stop(secure.up)
    assert secure.up.process.returncode == 0, secure.up.output()[-3000:]
    app_keys = [key for key in secure.store.api_keys() if key.name == "zkserve-app"]
    assert app_keys and not any(key.active for key in app_keys)


# ---- what listens where ----

def loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def stack_listeners(up: Up) -> list[tuple[str, str, int]]:
    """(process name, address, port) of every LISTEN socket of `up` and everything it started."""
    root = psutil.Process(up.process.pid)
    processes = {p.pid: p for p in [root, *root.children(recursive=True), *up.leftovers()]}
    found = []
    for process in processes.values():
        try:
            name = process.name()
            for connection in process.net_connections(kind="inet"):
                if connection.status == psutil.CONN_LISTEN:
                    found.append((name, connection.laddr.ip, connection.laddr.port))
        except psutil.Error:
            continue
    return sorted(set(found))


def test_on_defaults_nothing_the_stack_opens_listens_beyond_loopback(tmp_path, mlp_package):
    """The whole `up` stack on its default hosts: the ingress (gRPC and REST), the verifier and
    its metrics, anvil, and Ray's own servers (GCS, raylet, agents, every worker's core worker)."""
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    up = Up(state_dir, stack_env(state_dir, mlp_package))
    try:
        up.start()
        listeners = stack_listeners(up)
    finally:
        stop(up)
    ports = {port for _, _, port in listeners}
    for setting in PORT_SETTINGS:
        assert up.port(setting) in ports, f"{setting} ({up.port(setting)}) is not among {listeners}"
    names = {name for name, _, _ in listeners}
    assert {"gcs_server", "raylet"} <= names, names  # Ray's own servers were looked at too
    beyond = [item for item in listeners if not loopback(item[1])]
    assert not beyond, f"listening beyond loopback: {beyond}"
    print("listening:", ", ".join(f"{name} {address}:{port}" for name, address, port in listeners))


def test_up_refuses_an_open_port_beyond_loopback_naming_the_setting_and_the_flag(tmp_path, mlp_package):
    for section in ("INGRESS", "VERIFIER"):
        state_dir = tmp_path / section.lower()
        state_dir.mkdir()
        env = stack_env(state_dir, mlp_package, **{f"{section}_HOST": "0.0.0.0"})
        done = subprocess.run([sys.executable, "-m", "serve.cli", "up"], env=env, capture_output=True, text=True,
                              timeout=120)
        out = done.stdout + done.stderr
        assert done.returncode == 2, out
        assert f"{section.lower()}.auth_enabled: true" in out and "--insecure-no-auth" in out, out
        assert "0.0.0.0" in out and "Traceback" not in out, out
        assert not Up(state_dir, env).leftovers()  # refused before anything started
