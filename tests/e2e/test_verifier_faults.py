"""Nothing accepted is lost: kill -9 of the verifier with hashes queued, anvil stopped and
restarted from its state file, kill -9 of the verifier and its own anvil with the chain
coming back older than the verifier's records (the chain is the truth: reconciliation sends
again what it lost), and an RPC endpoint that answers errors (the one fault a real node
cannot produce on demand, so a small proxy injects it)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from serve.chain.anvil import rpc_chain_id
from serve.chain.keys import ANVIL_DEV_KEY
from serve.chain.registry import Registry, to_bytes32
from serve.ports import free_port
from serve.verifier.client import status_name
from tests.e2e.conftest import dev_chain, setup_registry

pytestmark = pytest.mark.e2e


def anchored_events(registry) -> list[dict]:
    return [e["args"] for e in registry.contract.events.Anchored.get_logs(from_block=0)]


def assert_all_recorded_once(registry, client, anchor_proofs=(), onchain_proofs=()):
    """Every proof final and provable on chain; no root anchored and no proof attested twice."""
    for proof in [*anchor_proofs, *onchain_proofs]:
        client.wait_final(proof.proof_hash, 90)
    events = anchored_events(registry)
    roots = Counter(e["root"] for e in events)
    assert all(n == 1 for n in roots.values()), roots
    assert sum(e["count"] for e in events) == len(anchor_proofs)
    for proof in anchor_proofs:
        record = client.wait_final(proof.proof_hash, 90)
        assert status_name(record) == "anchored", record
        assert to_bytes32(record.merkle_root) in roots
        assert registry.is_anchored(record.leaf, list(record.merkle_path), record.merkle_root)
    attested = Counter(e["args"]["proofHash"] for e in registry.contract.events.Attested.get_logs(from_block=0))
    for proof in onchain_proofs:
        assert status_name(client.wait_final(proof.proof_hash, 90)) == "attested"
        assert attested[to_bytes32(proof.proof_hash)] == 1


def assert_no_key(service):
    assert ANVIL_DEV_KEY[2:].lower() not in service.log_text().lower()


def test_kill_9_with_queued_hashes_then_restart(anvil_factory, verifier_factory, tmp_path, mlp_package, mlp_proofs):
    node = anvil_factory()
    registry = setup_registry(node.url, tmp_path, [mlp_package])
    # batches of 4 and a long max age: the last two hashes sit in the queue when the service dies
    service = verifier_factory(node.url, [mlp_package], state_dir=tmp_path, ZKSERVE_VERIFIER_ANCHOR_MAX_AGE_S="3600")
    client = service.start()
    proofs = mlp_proofs[:6]
    for proof in proofs:
        client.submit(mlp_package.model_id, proof)
    client.wait_final(proofs[0].proof_hash, 60)  # the full batch goes out
    assert [status_name(client.get(p.proof_hash)) for p in proofs[4:]] == ["pending", "pending"]
    service.kill9()
    client.close()

    client = service.start(ZKSERVE_VERIFIER_ANCHOR_MAX_AGE_S="0.5")
    assert_all_recorded_once(registry, client, anchor_proofs=proofs)
    assert len(anchored_events(registry)) == 2
    assert_no_key(service)
    client.close()


def test_anvil_outage_then_restart_from_state(anvil_factory, verifier_factory, tmp_path, mlp_package, mlp_proofs):
    node = anvil_factory()
    registry = setup_registry(node.url, tmp_path, [mlp_package])
    service = verifier_factory(node.url, [mlp_package], state_dir=tmp_path)
    client = service.start()
    before, during = mlp_proofs[:2], mlp_proofs[2:6]
    for proof in before:
        client.submit(mlp_package.model_id, proof)
    for proof in before:
        client.wait_final(proof.proof_hash, 60)

    node.stop()  # anvil writes its state file on exit
    client.submit(mlp_package.model_id, during[0], mode="onchain")
    for proof in during[1:]:
        client.submit(mlp_package.model_id, proof)
    time.sleep(2.0)
    record = client.get(during[1].proof_hash)
    assert status_name(record) == "pending" and "unreachable" in record.reason
    assert client.get(during[0].proof_hash).attempts >= 1

    restarted = anvil_factory(state_file=node.state_file, port=node.port)
    assert restarted.url == node.url
    assert_all_recorded_once(registry, client, anchor_proofs=before + during[1:], onchain_proofs=during[:1])
    assert_no_key(service)
    client.close()


@pytest.fixture(scope="module")
def many_mlp_proofs(mlp_prover, mlp_rows, mlp_proofs):
    """24 distinct demo MLP proofs (the eight shared ones and sixteen more)."""
    return list(mlp_proofs) + [mlp_prover.prove(mlp_rows[8 + i][None, :]) for i in range(16)]


def descendant_pids(pid: int) -> list[int]:
    """Children, grandchildren... of a process (Linux /proc), e.g. the anvil a verifier started."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return children + [grandchild for child in children for grandchild in descendant_pids(child)]


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("chain_after", ["as_dumped", "registry_only"])
def test_kill_9_with_its_anvil(verifier_factory, tmp_path, mlp_package, many_mlp_proofs, chain_after):
    """The issue's scenario: register demo-mlp, Submit 24 proofs, kill -9 the verifier and the
    anvil it started, restart. Every proof must end anchored on the chain as it is after the
    restart, exactly once, and GetAttestation must never say anchored for a root the chain denies.

    as_dumped: anvil comes back from its own last dump; the verifier confirms a batch only
    after a dump that followed its receipt, so no confirmed anchor is lost (none sent again).
    registry_only: the state file is replaced by the one taken when only the registry was
    deployed (a chain that lost more than the verifier can prevent: reorg, reset); the
    model's registration and the anchors are made again."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    service = verifier_factory("", [mlp_package], state_dir=tmp_path, ZKSERVE_CHAIN_ANVIL_PORT=str(port))
    client = service.start()  # starts its own anvil and deploys the registry
    state_file = tmp_path / "chain" / "anvil-state.json"
    deployed_at = time.time()
    wait_for(lambda: state_file.is_file() and state_file.stat().st_mtime > deployed_at + 0.5, 30, "an anvil state dump")
    snapshot = tmp_path / "registry-only-state.json"
    shutil.copy(state_file, snapshot)

    registry = setup_registry(url, tmp_path, [mlp_package])  # as `zkserve register` does, on the same state
    proofs = many_mlp_proofs
    assert len({p.proof_hash for p in proofs}) == 24
    for proof in proofs:
        client.submit(mlp_package.model_id, proof)
    for proof in proofs[:8]:
        assert status_name(client.wait_final(proof.proof_hash, 90)) == "anchored"
    anvil_pids = descendant_pids(service.process.pid)
    assert anvil_pids, "the verifier started no anvil"
    service.kill9()
    for pid in anvil_pids:
        os.kill(pid, signal.SIGKILL)
    client.close()
    wait_for(lambda: rpc_chain_id(url, timeout=0.2) is None, 10, "the killed anvil's port to close")
    if chain_after == "registry_only":
        shutil.copy(snapshot, state_file)

    client = service.start()
    registry = Registry.ensure(dev_chain(url), tmp_path)
    records, deadline = {}, time.monotonic() + 180
    while len(records) < len(proofs) and time.monotonic() < deadline:
        for proof in proofs:
            record = client.get(proof.proof_hash)
            if status_name(record) == "anchored":  # shown anchored only while the chain says so
                assert registry.is_anchored(record.leaf, list(record.merkle_path), record.merkle_root), record
                records[proof.proof_hash] = record
        time.sleep(0.5)
    assert len(records) == len(proofs), f"{len(records)} of {len(proofs)} anchored:\n{service.log_text()[-3000:]}"
    events = anchored_events(registry)  # the chain as it is after the restart
    roots = Counter(e["root"] for e in events)
    assert all(n == 1 for n in roots.values()), roots
    assert sum(e["count"] for e in events) == len(proofs)  # with each proof under one root: exactly once
    for record in records.values():
        assert to_bytes32(record.merkle_root) in roots
    assert registry.usage(mlp_package.model_id)["anchored_rows"] == len(proofs) * mlp_package.batch_size
    log = service.log_text()
    resent = [int(n) for n in re.findall(r"(\d+) batch\(es\) sent again", log)]
    if chain_after == "registry_only":
        assert "registered it again" in log  # the registration the chain lost, made again from the package
        assert sum(resent) >= 2, log[-3000:]  # the anchors the chain lost (8+ proofs in batches of 4), sent again
    else:
        assert "registered it again" not in log and sum(resent) == 0, log[-3000:]  # nothing confirmed was lost
    assert_no_key(service)
    client.close()


def test_deprecated_model_ends_rejected_not_retried(anvil_factory, verifier_factory, tmp_path, mlp_package,
                                                   mlp_proofs):
    """A revert no retry can fix ends in a final status with the reason, counted in metrics."""
    import urllib.request

    node = anvil_factory()
    registry = setup_registry(node.url, tmp_path, [mlp_package])
    registry.deprecate_model(mlp_package.model_id, "superseded")
    service = verifier_factory(node.url, [mlp_package], state_dir=tmp_path)
    client = service.start()
    anchor, onchain = mlp_proofs[:2], mlp_proofs[2]
    for proof in anchor:
        client.submit(mlp_package.model_id, proof)
    client.submit(mlp_package.model_id, onchain, mode="onchain")
    for proof in [*anchor, onchain]:
        record = client.wait_final(proof.proof_hash, 60)
        assert status_name(record) == "rejected" and "DeprecatedModel" in record.reason, record
    assert anchored_events(registry) == []
    with urllib.request.urlopen(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    assert 'zkserve_verifier_rejected_proofs{reason="DeprecatedModel"} 3.0' in text, text
    client.close()


class FaultyRpcProxy:
    """Forwards JSON-RPC to anvil, failing chosen methods a set number of times: 'refuse'
    answers 503 without forwarding; 'lose_reply' forwards (the node acts on it) and then
    answers 502, as a proxy that dies after the node accepted a transaction."""

    def __init__(self, upstream: str, faults: dict[str, list[str]]):
        self.upstream = upstream
        self.faults = {method: list(modes) for method, modes in faults.items()}
        self.injected = Counter()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                method = json.loads(body).get("method")
                with proxy._lock:
                    pending = proxy.faults.get(method) or []
                    mode = pending.pop(0) if pending else None
                    if mode:
                        proxy.injected[(method, mode)] += 1
                if mode == "refuse":
                    return self._reply(503, b"upstream busy")
                reply = requests.post(proxy.upstream, data=body, headers={"Content-Type": "application/json"},
                                      timeout=30)
                if mode == "lose_reply":
                    return self._reply(502, b"bad gateway")
                self._reply(reply.status_code, reply.content)

            def _reply(self, status: int, content: bytes):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def test_rpc_errors_are_retried_not_lost(anvil_factory, verifier_factory, tmp_path, mlp_package, mlp_proofs):
    node = anvil_factory()
    registry = setup_registry(node.url, tmp_path, [mlp_package])
    proxy = FaultyRpcProxy(
        node.url,
        {
            "eth_sendRawTransaction": ["refuse", "refuse", "lose_reply", "refuse", "lose_reply"],
            "eth_getTransactionReceipt": ["refuse", "refuse", "refuse"],
            "eth_estimateGas": ["refuse"],
        },
    )
    try:
        service = verifier_factory(proxy.url, [mlp_package], state_dir=tmp_path)
        client = service.start()
        anchor, onchain = mlp_proofs[:5], mlp_proofs[5:7]
        for proof in anchor:
            client.submit(mlp_package.model_id, proof)
        for proof in onchain:
            client.submit(mlp_package.model_id, proof, mode="onchain")
        assert_all_recorded_once(registry, client, anchor_proofs=anchor, onchain_proofs=onchain)
        assert not any(proxy.faults.values()), f"faults not all injected: {proxy.faults}"
        assert proxy.injected[("eth_sendRawTransaction", "lose_reply")] == 2
        assert_no_key(service)
        client.close()
    finally:
        proxy.close()
