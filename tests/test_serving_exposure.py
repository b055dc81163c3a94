"""`zkserve up`'s checks before anything listens, the app's own verifier key, and the setting
that keeps the local Ray cluster on loopback; no server starts here."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from serve.commands.serving import APP_KEY_NAME, _app_verifier_key, _check_exposure, _revoke_app_key
from serve.security import InsecureBind, InsecureFile, KeyStore, keys_path
from serve.settings import load_settings
from tests.conftest import REPO


def settings(tmp_path, **variables):
    environ = {"ZKSERVE_STATE_DIR": str(tmp_path), **{f"ZKSERVE_{key}": value for key, value in variables.items()}}
    return load_settings(environ=environ)


@pytest.mark.parametrize("section", ["INGRESS", "VERIFIER"])
def test_an_open_port_beyond_loopback_is_refused_unless_the_operator_opts_out(tmp_path, section):
    exposed = settings(tmp_path, **{f"{section}_HOST": "0.0.0.0"})
    with pytest.raises(InsecureBind) as refused:
        _check_exposure(exposed, insecure_no_auth=False)
    assert f"{section.lower()}.auth_enabled: true" in str(refused.value) and "--insecure-no-auth" in str(refused.value)
    _check_exposure(exposed, insecure_no_auth=True)
    _check_exposure(settings(tmp_path, **{f"{section}_HOST": "0.0.0.0", f"{section}_AUTH_ENABLED": "true"}), False)
    _check_exposure(settings(tmp_path), insecure_no_auth=False)  # the defaults: loopback


def test_a_readable_key_store_or_tls_key_is_refused_before_start(tmp_path):
    store = KeyStore(keys_path(tmp_path))
    store.create("web", ["predict"])
    store.path.chmod(0o644)
    with pytest.raises(InsecureFile, match=f"chmod 600 {store.path}"):
        _check_exposure(settings(tmp_path, INGRESS_AUTH_ENABLED="true"), insecure_no_auth=False)
    store.path.chmod(0o600)
    _check_exposure(settings(tmp_path, INGRESS_AUTH_ENABLED="true"), insecure_no_auth=False)

    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    key.chmod(0o644)
    with pytest.raises(InsecureFile, match=f"chmod 600 {key}"):
        _check_exposure(settings(tmp_path, INGRESS_TLS_CERT_FILE=str(cert), INGRESS_TLS_KEY_FILE=str(key)), False)


def test_the_apps_verifier_key_exists_only_with_verifier_auth_and_is_revoked(tmp_path):
    assert _app_verifier_key(settings(tmp_path)) is None  # verifier auth off: no key made
    assert _app_verifier_key(settings(tmp_path, VERIFIER_AUTH_ENABLED="true", SERVING_SUBMIT_PROOFS="false")) is None
    guarded = settings(tmp_path, VERIFIER_AUTH_ENABLED="true")
    key_id, token = _app_verifier_key(guarded)
    store = KeyStore(keys_path(tmp_path))
    key = store.lookup(token)
    assert key is not None and key.key_id == key_id and key.name == APP_KEY_NAME and key.rights == ("submit",)
    assert key.requests_per_s == 0.0  # the app is not throttled by the verifier's default quota
    _revoke_app_key(guarded, key_id)
    assert store.lookup(token) is None


def test_keep_ray_on_loopback_makes_a_local_ray_node_127_0_0_1():
    """Ray's own choice of node address, before and after (Ray imported, not started)."""
    probe = ("import sys\n"
             "from serve.security import keep_ray_on_loopback\n"
             "if sys.argv[1] == 'loopback':\n"
             "    keep_ray_on_loopback()\n"
             "from ray._private import services\n"
             "print(services.get_node_ip_address())\n")
    found = {}
    for mode in ("loopback", "as-is"):
        env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
        done = subprocess.run([sys.executable, "-c", probe, mode], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        found[mode] = done.stdout.strip().splitlines()[-1]
    assert found["loopback"] == "127.0.0.1", found
    print(f"Ray's node address: {found['as-is']} by default, {found['loopback']} with keep_ray_on_loopback()")


def test_clients_dial_a_bind_all_server_on_loopback(tmp_path):
    from serve.ports import client_target

    assert client_target("0.0.0.0", 9000) == "127.0.0.1:9000" and client_target("::", 9000) == "[::1]:9000"
    assert client_target("::1", 9100) == "[::1]:9100" and client_target("node-1.lan", 9100) == "node-1.lan:9100"
    loaded = settings(tmp_path, INGRESS_HOST="0.0.0.0", VERIFIER_HOST="::")
    assert loaded.ingress_target.startswith("127.0.0.1:") and loaded.verifier_target.startswith("[::1]:")


def test_predict_reaches_a_bind_all_tls_ingress_whose_certificate_names_only_its_host(tmp_path):
    """`zkserve predict/status` with ingress.host 0.0.0.0 dial loopback and check the certificate
    against its own name (here only "zkserve.example"): a real TLS handshake with a gRPC health
    server bound to every interface, and the same dial without that name refused."""
    from concurrent import futures

    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    from serve.commands.serving import _ingress_channel
    from serve.ports import free_port
    from serve.security import tls
    from tests.certs import self_signed

    cert, key = self_signed(tmp_path, dns_names=("zkserve.example",), ip_addresses=())
    assert tls.certificate_name(cert) == "zkserve.example"
    port = free_port("0.0.0.0")
    server = grpc.server(futures.ThreadPoolExecutor(2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    assert server.add_secure_port(f"0.0.0.0:{port}", tls.server_credentials(cert, key))
    server.start()
    try:
        loaded = settings(tmp_path, INGRESS_HOST="0.0.0.0", INGRESS_PORT=str(port), INGRESS_TLS_CERT_FILE=str(cert),
                          INGRESS_TLS_KEY_FILE=str(key))
        channel, _ = _ingress_channel(loaded, loaded.ingress_target)
        check = health_pb2.HealthCheckRequest(service="")
        answer = health_pb2_grpc.HealthStub(channel).Check(check, timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        channel.close()
        plain_name = grpc.secure_channel(loaded.ingress_target, tls.channel_credentials(cert))
        with pytest.raises(grpc.RpcError) as refused:  # "127.0.0.1" is not a name the certificate holds
            health_pb2_grpc.HealthStub(plain_name).Check(check, timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        plain_name.close()
    finally:
        server.stop(0)
