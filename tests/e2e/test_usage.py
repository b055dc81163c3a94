"""Usage on chain: after a served run and a scored run, the registry's per-model counters (read
with `zkserve usage` and from the contract directly) equal the rows proven, nothing more.

The whole stack as a user starts it: `zkserve up` (the Ray Serve app with submit_proofs on,
the verifier service and its local anvil) in a child process, attested gRPC requests that share
proofs of a 4-row circuit (so some proofs carry zero padding and several requests one proof),
then `zkserve score --submit` of a row count that leaves the last proof part-empty, one of its
proofs attested on chain too, and `zkserve usage`. A proof counts the rows its instances prove
(read by the verifier for anchors, by the contract for attestations), never the circuit's
padding, and a proof shared by several requests counts once.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pyarrow.parquet as pq
import pytest
from inference import grpc_service_pb2_grpc as oip_grpc

from circuits import Proof
from serve.chain.registry import Registry
from serve.oip_client import Prediction, infer_request
from serve.ports import free_port
from serve.scoring.anchoring import anchor_root
from serve.verifier.client import VerifierClient, status_name
from tests.conftest import REPO, run_cli
from tests.e2e.conftest import dev_chain
from tests.e2e.serving_fixtures import wait_until_ready

pytestmark = pytest.mark.e2e

SERVED_REQUESTS = (1, 1, 1, 2)  # rows per attested request: 5 rows over a 4-row circuit
SCORED_ROWS = 6  # a proof of 4 rows and one of 2 rows + 2 of padding
UP_TIMEOUT_S = 240
STOP_TIMEOUT_S = 30


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM (up shuts down Ray, the verifier and its anvil), then SIGKILL of its group."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture
def stack(tmp_path, mlp_batch4_package):
    """`zkserve up` serving the 4-row demo MLP, proofs shared by concurrent requests and submitted."""
    home = tmp_path / "home"
    ports = {name: free_port() for name in ("INGRESS_PORT", "INGRESS_HTTP_PORT", "VERIFIER_PORT",
                                              "VERIFIER_METRICS_PORT", "CHAIN_ANVIL_PORT")}
    env = {
        **os.environ,
        "ZKSERVE_HOME": str(home),
        **{f"ZKSERVE_{name}": str(port) for name, port in ports.items()},
        "ZKSERVE_SERVING_MODELS": f"[{mlp_batch4_package.root}]",
        "ZKSERVE_SERVING_SUBMIT_PROOFS": "true",
        "ZKSERVE_SERVING_PROOF_BATCHING": "shared",
        "ZKSERVE_SERVING_PROOF_BATCH_WAIT_TIMEOUT_S": "3.0",  # long enough that concurrent requests share
        "ZKSERVE_SERVING_PROVER_REPLICAS": "1",
        "ZKSERVE_VERIFIER_ANCHOR_MAX_AGE_S": "0.5",
    }
    log = tmp_path / "up.log"
    with open(log, "wb") as stream:
        process = subprocess.Popen([sys.executable, "-m", "serve.cli", "up"], cwd=REPO, env=env, stdout=stream,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        try:
            wait_until_ready(f"127.0.0.1:{ports['INGRESS_PORT']}", UP_TIMEOUT_S)
        except TimeoutError:
            pytest.fail(f"zkserve up did not become ready:\n{log.read_text(errors='replace')[-3000:]}")
        yield {"env": env, "ports": ports, "home": home, "log": log}
    finally:
        _stop(process)


def _served(ingress: str, package, rows: np.ndarray) -> list[str]:
    """Attested (sync) requests sent at once, so the prover shares proofs among them; their proof hashes."""
    stub = oip_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(ingress))
    name = package.inputs[0]["name"]
    offsets = np.cumsum((0, *SERVED_REQUESTS))
    requests = [infer_request(package.name, {name: rows[a:b]}, attest="sync")
                for a, b in zip(offsets, offsets[1:], strict=False)]
    with ThreadPoolExecutor(len(requests)) as pool:
        responses = list(pool.map(lambda request: stub.ModelInfer(request, timeout=300), requests))
    predictions = [Prediction.from_response(response) for response in responses]
    assert all(p.parameters.get("proven_outputs_match") is True for p in predictions), [
        p.parameters for p in predictions]
    return [p.parameters["proof_hash"] for p in predictions]


def test_usage_counts_match_rows_proven(stack, mlp_batch4_package, mlp_rows, tmp_path, monkeypatch):
    package, env = mlp_batch4_package, stack["env"]
    assert package.batch_size == 4 and package.manifest["visibility"]["input"] == "public"
    verifier = f"127.0.0.1:{stack['ports']['VERIFIER_PORT']}"
    rng = np.random.default_rng(12)
    # rows inside the input domain and never all zero (a trailing all-zero row reads as padding)
    served_rows = mlp_rows[rng.choice(len(mlp_rows), sum(SERVED_REQUESTS), replace=False)].astype(np.float32)
    served = _served(f"127.0.0.1:{stack['ports']['INGRESS_PORT']}", package, served_rows)
    assert len(set(served)) < len(served), served  # requests shared proofs: each must count once
    with VerifierClient(verifier) as client:
        for proof_hash in set(served):  # the app submits each proof once, off the response path
            record = client.wait_final(proof_hash, timeout_s=180, not_yet_submitted_ok=True)
            assert status_name(record) == "anchored", record

    scored_input = tmp_path / "scored.npy"
    np.save(scored_input, mlp_rows[:SCORED_ROWS].astype(np.float32))
    job = tmp_path / "job"
    # a process of its own with its own local Ray: the session's serving app may hold this pytest's Ray
    scored = run_cli("score", str(package.root), "--input", str(scored_input), "--output", str(job), "--submit",
                     "--verifier", verifier, "--no-progress", "--chunk-rows", "8", env=env, timeout=600)
    assert scored.returncode == 0, (scored.stdout + scored.stderr)[-3000:]
    results = pq.read_table(job / "results.parquet").to_pylist()
    assert {row["attestation"] for row in results} == {"anchored"}
    rows_of = Counter(row["proof_id"] for row in results)
    assert sorted(rows_of.values()) == [2, 4], rows_of  # the second proof is half padding

    expected = sum(SERVED_REQUESTS) + SCORED_ROWS
    chain = dev_chain(f"http://127.0.0.1:{stack['ports']['CHAIN_ANVIL_PORT']}")
    registry = Registry.recorded(chain, stack["home"])
    assert registry is not None
    # read directly: the verifier anchored every proof, stating only the rows each one proves
    assert registry.usage(package.model_id) == {"anchored_rows": expected, "attested_rows": 0}, served
    events = registry.contract.events.Usage.get_logs(from_block=registry.deployed_block,
                                                     argument_filters={"modelId": bytes.fromhex(package.model_id[2:])})
    assert all(e["args"]["anchored"] for e in events) and sum(e["args"]["rows"] for e in events) == expected

    # an audit-sampled job's commitment root (`score --sample --submit`) is anchored stating no rows: it proves none
    for name in ("HOME", "CHAIN_ANVIL_PORT"):
        monkeypatch.setenv(f"ZKSERVE_{name}", env[f"ZKSERVE_{name}"])
    committed = anchor_root(b"\x5a" * 32, 10, package.model_id)
    assert committed["anchorer"] == chain.address and registry.anchor_info(b"\x5a" * 32)["count"] == 10
    assert registry.usage(package.model_id)["anchored_rows"] == expected

    # attested on chain by anyone: the contract counts the rows the proof's inputs prove, not its padding
    padded = Proof.load(job / "proofs" / f"{min(rows_of, key=rows_of.get)}.json")
    chain.transact(registry.attest_call(package.model_id, padded.proof_bytes, padded.instances), registry.abi)
    chain.transact(registry.attest_call(package.model_id, padded.proof_bytes, padded.instances), registry.abi)
    assert registry.usage(package.model_id) == {"anchored_rows": expected, "attested_rows": 2}  # counted once

    usage = run_cli("usage", str(package.root), env=env, timeout=120)
    assert usage.returncode == 0, usage.stderr
    out = usage.stdout + usage.stderr
    assert package.model_id in out and f"anchored rows {expected}  attested rows 2  total {expected + 2}" in out, out
    every = run_cli("usage", env=env, timeout=120)  # every registered model, named by its package
    assert every.returncode == 0 and re.search(rf"{package.name}\s+{package.model_id}", every.stdout + every.stderr)
