"""The security layer's pieces without a server: key store, guard, quotas, redaction, bind
checks, secret files, and the signing key kept out of child processes."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys

import pytest

from serve.chain.keys import ANVIL_DEV_KEY, KEY_ENV, SigningKeyError, child_env, load_signer
from serve.errors import PermissionDenied, ResourceExhausted, Unauthenticated
from serve.security import (
    ANONYMOUS,
    Guard,
    InsecureBind,
    InsecureFile,
    KeyStore,
    KeyStoreError,
    QueuedProofs,
    is_loopback,
    redact,
    redact_url,
    register_secret_url,
    require_safe_bind,
)
from serve.security.redact import install_log_redaction
from tests.conftest import REPO, run_cli

VERIFY = "/zkserve.v1.Verifier/Verify"
SUBMIT = "/zkserve.v1.Verifier/Submit"


def bearer(token: str) -> dict:
    return {"authorization": f"Bearer {token}"}


def test_key_store_keeps_only_salted_hashes_in_a_private_file(tmp_path):
    store = KeyStore(tmp_path / "auth" / "keys.json")
    key, token = store.create("ci", ["verify"])
    text = store.path.read_text()
    assert token not in text and token.split(".", 1)[1] not in text
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    entry = json.loads(text)["keys"][0]
    assert entry["key_id"] == key.key_id and len(entry["digest"]) == 64 and len(entry["salt"]) == 32
    assert KeyStore(store.path).lookup(token).key_id == key.key_id  # a fresh reader finds it
    assert store.lookup(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert store.lookup("zks_" + key.key_id) is None and store.lookup("") is None
    with pytest.raises(KeyStoreError, match="rights must be some of"):
        store.create("bad", ["root"])
    os.chmod(store.path, 0o644)
    with pytest.raises(InsecureFile, match=f"chmod 600 {store.path}"):
        KeyStore(store.path).lookup(token)


def test_guard_statuses_and_a_revoke_seen_by_a_running_guard(tmp_path):
    path = tmp_path / "keys.json"
    writer = KeyStore(path)
    _, verifier_token = writer.create("reader", ["verify"])
    admin, admin_token = writer.create("ops", ["admin"])
    guard = Guard.from_settings(True, path)
    with pytest.raises(Unauthenticated, match="authorization: Bearer"):
        guard.authenticate({}, VERIFY)
    with pytest.raises(Unauthenticated, match="authorization: Bearer"):
        guard.authenticate({"authorization": "Basic abc"}, VERIFY)
    with pytest.raises(Unauthenticated, match="unknown or revoked"):
        guard.authenticate(bearer("zks_000000000000.nope"), VERIFY)
    principal = guard.authenticate(bearer(verifier_token), VERIFY)
    assert principal.rights == {"verify"}
    with pytest.raises(PermissionDenied, match="needs the 'submit' right"):
        guard.authenticate(bearer(verifier_token), SUBMIT)
    with pytest.raises(PermissionDenied, match="'admin'"):
        guard.authenticate(bearer(verifier_token), "/some.Unknown/Method")  # closed by default
    assert guard.authenticate(bearer(admin_token), SUBMIT).key_id == admin.key_id  # admin holds every right
    KeyStore(path).revoke(admin.key_id)  # the CLI, another process, in effect at once
    with pytest.raises(Unauthenticated, match="unknown or revoked"):
        guard.authenticate(bearer(admin_token), VERIFY)
    assert Guard.from_settings(False, path).authenticate({}, SUBMIT) is ANONYMOUS


def test_requests_per_second_quota_per_key():
    now = [0.0]
    guard = Guard(False, None, requests_per_s=2.0, burst_s=1.0, clock=lambda: now[0])
    guard.admit(ANONYMOUS, "Verify")
    guard.admit(ANONYMOUS, "Verify")
    with pytest.raises(ResourceExhausted, match="over its quota of 2 requests/s"):
        guard.admit(ANONYMOUS, "Verify")
    now[0] += 0.5  # one token back
    guard.admit(ANONYMOUS, "Verify")
    other = ANONYMOUS.__class__("k2", frozenset({"verify"}), requests_per_s=1.0)
    guard.admit(other, "Verify")  # its own bucket and its own rate
    with pytest.raises(ResourceExhausted, match="quota of 1 requests/s"):
        guard.admit(other, "Verify")
    Guard(False, None, requests_per_s=0).admit(ANONYMOUS, "x")  # 0: no quota


def test_queued_proofs_per_key_bound():
    finished: set[str] = set()
    queued = QueuedProofs(2, lambda proof: proof not in finished)
    queued.reserve(ANONYMOUS, "a")
    queued.reserve(ANONYMOUS, "b")
    queued.reserve(ANONYMOUS, "a")  # the same proof again is no new reservation
    with pytest.raises(ResourceExhausted, match="2 proofs queued"):
        queued.reserve(ANONYMOUS, "c")
    finished.add("a")
    queued.reserve(ANONYMOUS, "c")


def test_redaction_of_urls_and_their_secrets(caplog):
    url = "https://user:pw-secret@rpc.example.com:8545/v3/FAKEKEY1234567890?apikey=QUERYKEY99999"
    assert redact_url(url) == "https://rpc.example.com:8545"
    register_secret_url(url)
    text = f"POST {url} failed; url: /v3/FAKEKEY1234567890 (apikey=QUERYKEY99999)"
    cleaned = redact(text)
    for secret in ("FAKEKEY1234567890", "QUERYKEY99999", "pw-secret", "user:"):
        assert secret not in cleaned
    assert "https://rpc.example.com:8545" in cleaned
    logger = logging.getLogger("zkserve-redaction-test")
    handler = logging.StreamHandler(stream := __import__("io").StringIO())
    logger.addHandler(handler)
    install_log_redaction(logger)
    try:
        raise RuntimeError(f"boom at {url}")
    except RuntimeError:
        logger.exception("calling %s", url)
    logger.removeHandler(handler)
    assert "FAKEKEY1234567890" not in stream.getvalue() and "rpc.example.com:8545" in stream.getvalue()
    assert "boom at https://rpc.example.com:8545" in stream.getvalue()


def test_bind_check_names_the_setting_and_the_flag():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("::")
    require_safe_bind("127.0.0.1", False, False, "verifier.auth_enabled", "the verifier")
    require_safe_bind("0.0.0.0", True, False, "verifier.auth_enabled", "the verifier")
    require_safe_bind("0.0.0.0", False, True, "verifier.auth_enabled", "the verifier")
    with pytest.raises(InsecureBind, match=r"verifier.auth_enabled: true.*--insecure-no-auth"):
        require_safe_bind("0.0.0.0", False, False, "verifier.auth_enabled", "the verifier")


def test_key_file_readable_by_others_is_refused_with_the_chmod(tmp_path):
    key_file = tmp_path / "signer.key"
    key_file.write_text(ANVIL_DEV_KEY)
    key_file.chmod(0o644)
    remote = {"rpc_url": "http://node.example:8545", "private_key_file": str(key_file)}
    with pytest.raises(SigningKeyError, match=f"run `chmod 600 {key_file}`"):
        load_signer(remote, False, {})
    key_file.chmod(0o600)
    assert load_signer(remote, False, {}).address.startswith("0xf39F")


def test_signing_key_leaves_the_environment_before_any_child_starts(tmp_path):
    """The CLI entry takes the key out of os.environ: a child started afterwards (anvil, node,
    Ray) does not inherit it; only the verifier child `up` starts gets it, explicitly."""
    probe = (
        "import os, subprocess, sys\n"
        "from serve.cli import app\n"
        "from serve.chain.keys import child_env, load_signer\n"
        "try:\n"
        "    app(['keys', 'list'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "show = 'import os; print(os.environ.get(\"" + KEY_ENV + "\", \"absent\"))'\n"
        "child = subprocess.run([sys.executable, '-c', show], capture_output=True, text=True)\n"
        "print('child:', child.stdout.strip())\n"
        "print('signer:', load_signer({'rpc_url': 'http://x:1', 'private_key_file': None}, False).address)\n"
        "print('verifier child:', child_env(with_key=True).get('" + KEY_ENV + "') is not None)\n"
    )
    env = {**os.environ, KEY_ENV: ANVIL_DEV_KEY, "ZKSERVE_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=REPO,
                            timeout=120)
    assert "child: absent" in result.stdout, result.stdout + result.stderr
    assert "signer: 0xf39F" in result.stdout and "verifier child: True" in result.stdout
    assert KEY_ENV not in child_env({KEY_ENV: "x", "A": "b"})


def test_keys_cli_create_list_revoke(tmp_path):
    env = {"ZKSERVE_HOME": str(tmp_path)}
    created = run_cli("keys", "create", "batch-job", "--right", "verify", "--right", "submit", env=env, timeout=120)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("zks_")
    key_id = token[4:].split(".")[0]
    listed = run_cli("keys", "list", env=env, timeout=120)
    assert key_id in listed.stdout + listed.stderr and token not in listed.stdout + listed.stderr
    assert run_cli("keys", "revoke", key_id, env=env, timeout=120).returncode == 0
    assert KeyStore(tmp_path / "auth" / "keys.json").lookup(token) is None
    bad = run_cli("keys", "create", "x", "--right", "root", env=env, timeout=120)
    assert bad.returncode == 1 and "rights must be some of" in bad.stdout + bad.stderr


def test_rpc_limits_refuse_past_each_cap_and_free_slots_once():
    from serve.security.interceptor import RpcLimits

    limits = RpcLimits(max_unary=2, max_streams=1)
    assert limits.threads == 2 + 1 + 4  # room for health beyond every admitted RPC
    first, second = limits.acquire(False), limits.acquire(False)
    with pytest.raises(ResourceExhausted, match=r"2 RPCs in flight.*verifier.max_concurrent_rpcs"):
        limits.acquire(False)
    stream = limits.acquire(True)  # streams have their own cap
    with pytest.raises(ResourceExhausted, match="verifier.max_streams"):
        limits.acquire(True)
    first()
    first()  # a second release of the same slot (callback and finally) frees nothing more
    limits.acquire(False)
    with pytest.raises(ResourceExhausted):
        limits.acquire(False)
    second()
    stream()
    limits.acquire(True)


def test_a_key_store_made_public_under_a_running_guard_fails_closed(tmp_path, caplog):
    from serve.errors import Unavailable

    path = tmp_path / "keys.json"
    _, token = KeyStore(path).create("ci", ["verify"])
    guard = Guard.from_settings(True, path)
    assert guard.check_store() == 1
    os.chmod(path, 0o644)
    os.utime(path, ns=(1, 1))  # a changed file is read again
    with pytest.raises(Unavailable, match="cannot read its API key store"):
        guard.authenticate(bearer(token), VERIFY)
    assert "chmod 600" in caplog.text
    with pytest.raises(InsecureFile):
        Guard.from_settings(True, path).check_store()  # and a service does not start on it
