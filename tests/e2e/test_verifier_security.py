"""The verifier's network surface, over real gRPC (child process), real anvil and real proofs:
API keys and rights, quotas, TLS, bounded documents, streams and concurrency, bind checks,
RPC URLs redacted everywhere, and the signing key kept out of children's environments."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from serve.chain.keys import ANVIL_DEV_KEY, KEY_ENV
from serve.ports import free_port
from serve.security import KeyStore
from serve.verifier.client import VerifierClient, status_name
from tests.certs import self_signed
from tests.e2e.conftest import REPO, VerifierProcess, setup_registry

pytestmark = pytest.mark.e2e
FAKE_KEY = "FAKEAPIKEY0123456789abcdef"
FAKE_PASS = "FAKEPASSWORD98765"


@dataclass
class SecureVerifier(VerifierProcess):
    """The conftest's verifier process, with a client that may speak TLS and carry a token."""

    client_kwargs: dict = field(default_factory=dict)

    def client(self, **kwargs) -> VerifierClient:
        return VerifierClient(self.target, timeout_s=30, retries=0, **{**self.client_kwargs, **kwargs})

    def start(self, **env_overrides) -> VerifierClient:
        self.env_overrides.update(env_overrides)
        log = self.state_dir / f"verifier-{len(self.logs)}.log"
        self.logs.append(log)
        command = [sys.executable, "-m", "serve.verifier"]
        command += [arg for package in self.packages for arg in ("--package", str(package))]
        with open(log, "wb") as stream:
            self.process = subprocess.Popen(command, cwd=REPO, env=self.env(), stdout=stream, stderr=subprocess.STDOUT)
        client = self.client()
        try:
            client.wait_ready(90)
        except TimeoutError:
            raise RuntimeError(f"verifier did not start:\n{self.log_text()[-3000:]}") from None
        return client


def rpc_error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def health(target: str, credentials: grpc.ChannelCredentials | None = None, timeout: float = 5.0):
    channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    try:
        return health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="zkserve.v1.Verifier"), timeout=timeout).status
    finally:
        channel.close()


@pytest.fixture(scope="module")
def registry(module_anvil, tmp_path_factory, mlp_package, cnn_package):
    state_dir = tmp_path_factory.mktemp("secure-home")
    return state_dir, setup_registry(module_anvil.url, state_dir, [mlp_package, cnn_package])


@pytest.fixture(scope="module")
def keys(registry):
    """API keys in the service's key store: one per right, a slow one, and one revoked later."""
    state_dir, _ = registry
    store = KeyStore(state_dir / "auth" / "keys.json")
    tokens = {name: store.create(name, rights, rate)[1] for name, rights, rate in [
        ("reader", ["verify"], None), ("submitter", ["verify", "submit"], None), ("ops", ["admin"], None),
        ("slow", ["verify"], 1.0), ("leaver", ["verify"], None)]}
    return store, tokens


@pytest.fixture(scope="module")
def guarded(registry, keys, module_anvil, mlp_package, cnn_package):
    """Auth on; proofs stay queued (no anchoring) so streams stay open and queue bounds bite."""
    state_dir, _ = registry
    service = SecureVerifier(state_dir, module_anvil.url, [mlp_package.root, cnn_package.root],
                             client_kwargs={"token": keys[1]["ops"]})
    service.start(ZKSERVE_VERIFIER_AUTH_ENABLED="true", ZKSERVE_VERIFIER_ANCHOR_BATCH_SIZE="1000",
                  ZKSERVE_VERIFIER_ANCHOR_MAX_AGE_S="3600", ZKSERVE_VERIFIER_MAX_QUEUED_PROOFS_PER_KEY="1",
                  ZKSERVE_VERIFIER_STREAM_MAX_S="8", ZKSERVE_VERIFIER_MAX_STREAMS="110").close()
    yield service
    service.stop()


def test_api_keys_rights_and_revocation(guarded, keys, mlp_package, mlp_proofs):
    store, tokens = keys
    proof = mlp_proofs[0]
    assert health(guarded.target) == health_pb2.HealthCheckResponse.SERVING  # open, no token
    cases = [
        (None, lambda c: c.verify(mlp_package.model_id, proof), grpc.StatusCode.UNAUTHENTICATED,
         "authorization: Bearer"),
        ("zks_0123456789ab.forged", lambda c: c.verify(mlp_package.model_id, proof), grpc.StatusCode.UNAUTHENTICATED,
         "unknown or revoked"),
        (tokens["reader"], lambda c: c.submit(mlp_package.model_id, proof), grpc.StatusCode.PERMISSION_DENIED,
         "'submit' right"),
        (tokens["submitter"], lambda c: c.submit(mlp_package.model_id, proof, mode="onchain"),
         grpc.StatusCode.PERMISSION_DENIED, "ONCHAIN needs the 'admin' right"),
    ]
    for token, call, code, text in cases:
        with guarded.client(token=token or "") as client:
            error = rpc_error(lambda call=call, client=client: call(client))
            assert error.code() == code and text in error.details(), (code, error.details())
    with guarded.client(token=tokens["reader"]) as client:
        assert client.verify(mlp_package.model_id, proof).valid
    with guarded.client(token=tokens["leaver"]) as client:
        assert client.verify(mlp_package.model_id, proof).valid
        leaver = next(k for k in store.api_keys() if k.name == "leaver")
        result = subprocess.run([sys.executable, "-m", "serve.cli", "keys", "revoke", leaver.key_id], cwd=REPO,
                                env={**os.environ, "ZKSERVE_HOME": str(guarded.state_dir)}, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        error = rpc_error(lambda: client.verify(mlp_package.model_id, proof))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED and "revoked" in error.details()
    channel = grpc.insecure_channel(guarded.target)  # reflection needs a key too
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
    replies = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
    with pytest.raises(grpc.RpcError) as caught:
        list(replies)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    channel.close()


def test_quotas_rate_and_queued_proofs(guarded, keys, mlp_package, mlp_proofs):
    _, tokens = keys
    with guarded.client(token=tokens["slow"]) as client:  # 1 request/s, burst 2
        codes = []
        for _ in range(4):
            try:
                client.get("0x" + "00" * 32)
            except grpc.RpcError as error:
                codes.append(error.code())
                if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    assert "over its quota of 1 requests/s" in error.details()
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    with guarded.client(token=tokens["submitter"]) as client:  # one proof queued per key
        first = client.submit(mlp_package.model_id, mlp_proofs[1])
        assert status_name(first.attestation) == "pending"
        assert client.submit(mlp_package.model_id, mlp_proofs[1]).already_submitted  # the same proof is no new one
        error = rpc_error(lambda: client.submit(mlp_package.model_id, mlp_proofs[2]))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "1 proofs queued" in error.details()


def test_global_bound_on_queued_proofs(module_anvil, tmp_path, mlp_package, mlp_proofs):
    setup_registry(module_anvil.url, tmp_path, [mlp_package])
    service = SecureVerifier(tmp_path, module_anvil.url, [mlp_package.root])
    client = service.start(ZKSERVE_VERIFIER_MAX_QUEUED_PROOFS="1", ZKSERVE_VERIFIER_ANCHOR_BATCH_SIZE="1000",
                           ZKSERVE_VERIFIER_ANCHOR_MAX_AGE_S="3600")
    try:
        assert status_name(client.submit(mlp_package.model_id, mlp_proofs[6]).attestation) == "pending"
        error = rpc_error(lambda: client.submit(mlp_package.model_id, mlp_proofs[7]))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "verifier.max_queued_proofs" in error.details()
    finally:
        client.close()
        service.stop()


def test_the_200_mb_document_is_refused_at_once(guarded, mlp_package):
    raw = b'{"model_id":"0x","ezkl":{"proof":200000000,"instances":[]}}'
    with guarded.client(token=KeyStore(guarded.state_dir / "auth" / "keys.json").create("t", ["verify"])[1]) as client:
        client.wait_ready(10)
        timings = []
        for _ in range(5):
            started = time.perf_counter()
            error = rpc_error(lambda: client.verify(mlp_package.model_id, raw))
            timings.append(time.perf_counter() - started)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "list of bytes" in error.details()
    # the server's own check takes well under 10 ms (tests/test_security_documents.py); over
    # loopback gRPC the round trip stays far below the ~1 s that allocating 200 MB cost
    assert min(timings) < 0.05, timings


def test_health_answers_while_100_slow_streams_are_open_and_streams_end(guarded, keys, mlp_package, mlp_proofs):
    _, tokens = keys
    client = guarded.client(token=tokens["ops"])
    pending = client.submit(mlp_package.model_id, mlp_proofs[3]).attestation.proof_hash  # stays pending
    streams, first_seen, errors = [], threading.Semaphore(0), []

    def watch() -> None:
        call = client.watch(pending, timeout_s=120)
        streams.append(call)
        try:
            for _record in call:
                first_seen.release()
        except grpc.RpcError as error:
            errors.append(error.code())

    threads = [threading.Thread(target=watch, daemon=True) for _ in range(100)]
    for thread in threads:
        thread.start()
    for _ in range(100):
        assert first_seen.acquire(timeout=60), "not every stream opened"
    started = time.perf_counter()
    assert health(guarded.target) == health_pb2.HealthCheckResponse.SERVING
    health_s = time.perf_counter() - started
    started = time.perf_counter()
    assert client.verify(mlp_package.model_id, mlp_proofs[0]).valid
    verify_s = time.perf_counter() - started
    assert health_s < 2.0 and verify_s < 20.0, (health_s, verify_s)
    # the streams end by the server's bound (stream_max_s = 8), not by the client's deadline
    for thread in threads:
        thread.join(60)
    assert len(errors) == 100 and set(errors) == {grpc.StatusCode.DEADLINE_EXCEEDED}
    error = rpc_error(lambda: list(client.watch(pending, timeout_s=60)))
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "verifier.stream_max_s" in error.details()
    client.close()


# ---- TLS ----

def test_tls_round_trip_and_plaintext_refused(registry, module_anvil, mlp_package, mlp_proofs, tmp_path):
    state_dir, _ = registry
    cert_file, key_file = self_signed(tmp_path)
    service = SecureVerifier(state_dir, module_anvil.url, [mlp_package.root], client_kwargs={"root_cert": cert_file})
    client = service.start(ZKSERVE_VERIFIER_TLS_CERT_FILE=str(cert_file), ZKSERVE_VERIFIER_TLS_KEY_FILE=str(key_file))
    try:
        assert client.verify(mlp_package.model_id, mlp_proofs[0]).valid  # TLS, the certificate the test made
        with VerifierClient(service.target, timeout_s=5, retries=0) as plaintext:
            error = rpc_error(lambda: plaintext.verify(mlp_package.model_id, mlp_proofs[0]))
            assert error.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.RpcError):
            health(service.target, timeout=3)
        assert "TLS" in service.log_text()
    finally:
        client.close()
        service.stop()
    key_file.chmod(0o644)  # a TLS key others can read: refused with the chmod
    result = subprocess.run([sys.executable, "-m", "serve.verifier"], cwd=REPO, capture_output=True, text=True,
                            timeout=120, env={**service.env(), "ZKSERVE_VERIFIER_PORT": str(free_port())})
    assert result.returncode != 0 and f"chmod 600 {key_file}" in result.stdout + result.stderr


# ---- binding ----

def outside_address() -> str | None:
    """An address of this machine beyond loopback, if it has one."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("10.255.255.255", 1))  # no packet is sent; picks the outgoing interface
        address = probe.getsockname()[0]
    except OSError:
        return None
    finally:
        probe.close()
    return None if ipaddress.ip_address(address).is_loopback else address


def test_binds_loopback_only_and_refuses_open_non_loopback(guarded, tmp_path):
    address = outside_address()
    for port in (guarded.port, guarded.metrics_port):  # gRPC and Prometheus: loopback only
        if address is not None:
            with pytest.raises(OSError):
                socket.create_connection((address, port), timeout=2).close()
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    env = {**os.environ, "ZKSERVE_HOME": str(tmp_path), "ZKSERVE_VERIFIER_HOST": "0.0.0.0",
           "ZKSERVE_VERIFIER_PORT": str(free_port()), "ZKSERVE_CHAIN_RPC_URL": "http://127.0.0.1:9"}
    result = subprocess.run([sys.executable, "-m", "serve.verifier"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert "verifier.auth_enabled: true" in result.stderr and "--insecure-no-auth" in result.stderr


# ---- secrets: RPC URL and signing key ----

def test_rpc_url_with_a_key_appears_in_no_record_message_or_log(anvil_factory, tmp_path, mlp_package,
                                                                mlp_batch4_package, mlp_proofs):
    node = anvil_factory()
    state_dir = tmp_path / "home"
    setup_registry(node.url, state_dir, [mlp_package])
    secret_url = node.url.replace("http://", f"http://user:{FAKE_PASS}@") + f"/?apikey={FAKE_KEY}"
    service = SecureVerifier(state_dir, secret_url, [mlp_package.root, mlp_batch4_package.root])
    client = service.start()
    seen: list[str] = []
    try:
        client.submit(mlp_package.model_id, mlp_proofs[5])  # registered, now known to the service
        assert status_name(client.wait_final(mlp_proofs[5].proof_hash, 60)) == "anchored"
        node.stop()  # the chain goes away: errors now carry the endpoint
        record = client.submit(mlp_package.model_id, mlp_proofs[6]).attestation
        deadline = time.monotonic() + 60
        while not record.reason and time.monotonic() < deadline:
            time.sleep(0.3)
            record = client.get(mlp_proofs[6].proof_hash)
        assert "unreachable" in record.reason or "error" in record.reason, record
        seen.append(str(record))
        seen += [str(r) for r in [client.get(mlp_proofs[5].proof_hash)]]
        import numpy as np

        from circuits import Prover
        other = Prover(mlp_batch4_package).prove(np.zeros((1, 16)))
        error = rpc_error(lambda: client.submit(mlp_batch4_package.model_id, other))  # chain check fails
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        seen.append(error.details())
    finally:
        client.close()
        service.stop()
    seen.append(service.log_text())
    seen.append((state_dir / "verifier" / "outbox.sqlite").read_bytes().decode("latin-1"))
    everything = "\n".join(seen)
    assert f"http://{node.host}:{node.port}" in everything  # the endpoint itself is shown ...
    assert FAKE_KEY not in everything and FAKE_PASS not in everything  # ... its secrets never


def child_pids(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def test_signing_key_not_in_anvils_environment(tmp_path, mlp_package):
    """The verifier starts the local anvil itself; the key in its own environment stays there."""
    service = SecureVerifier(tmp_path, "", [mlp_package.root])
    env_port = free_port()
    client = service.start(ZKSERVE_CHAIN_RPC_URL="", ZKSERVE_CHAIN_ANVIL_PORT=str(env_port))
    try:
        children = child_pids(service.process.pid)
        environs = {pid: Path(f"/proc/{pid}/environ").read_bytes() for pid in children}
        anvils = [pid for pid in children if b"anvil" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert anvils, f"no anvil child among {children}"
        for pid in anvils:
            assert KEY_ENV.encode() not in environs[pid] and ANVIL_DEV_KEY[2:].encode() not in environs[pid]
        own = Path(f"/proc/{service.process.pid}/environ").read_bytes()  # the initial environment (read-only view)
        assert KEY_ENV.encode() in own  # the test did hand it over
    finally:
        client.close()
        service.stop()


def test_signing_key_not_in_ray_workers_environment(tmp_path):
    script = (
        "import os, ray\n"
        "from serve.cli import app\n"
        "try:\n"
        "    app(['keys', 'list'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)\n"
        "@ray.remote\n"
        "def probe():\n"
        "    return os.environ.get('" + KEY_ENV + "', 'absent')\n"
        "print('worker:', ray.get(probe.remote(), timeout=120))\n"
        "ray.shutdown()\n"
    )
    env = {**os.environ, KEY_ENV: ANVIL_DEV_KEY, "ZKSERVE_HOME": str(tmp_path), "RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)
    assert "worker: absent" in result.stdout, result.stdout[-2000:] + result.stderr[-3000:]
