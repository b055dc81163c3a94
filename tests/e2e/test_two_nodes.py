"""No shared disk assumed: a Ray cluster of two raylets on this machine, each with its own temp
dir and its own package cache ($ZKSERVE_PACKAGE_CACHE set only in that raylet's environment).
The provers (the app's Prover replica, the scoring job's proving actors) can run only on the
second node (a custom resource). The head's copy of the package is renamed away right after
the driver put it in the object store, so every process, on either node, gets the package by
model_id from the object store into its node's cache: an attested ModelInfer and a scoring job
still work, and every proof verifies.

Processes are stopped by pid (never `ray stop`: other Ray clusters run on this machine)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from inference import grpc_service_pb2_grpc as oip_grpc

from circuits import Proof
from serve.oip_client import output_array, proof_bytes
from serve.ports import free_port
from tests.conftest import REPO, copy_package, run_cli
from tests.e2e.ray_nodes import LocalCluster, resource
from tests.e2e.serving_fixtures import serving_config, wait_until_ready
from tests.e2e.serving_helpers import infer_request, ort_run, verify_in_subprocess

pytestmark = pytest.mark.e2e
NODE2, HEAD = resource("node2"), resource("head")  # custom resources only that raylet offers

# The app's driver: builds the app (which puts each package in the object store), hides the
# head's package directory, then deploys; it serves until its stdin closes.
SERVE_DRIVER = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    import ray
    from ray import serve
    from serve.app.builder import APP_NAME, build_app, deployment_overrides, http_options
    from serve.app.direct import serve_env

    document = json.loads(Path(sys.argv[1]).read_text())
    hidden = Path(sys.argv[2])
    ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
    app = build_app(document["zkserve"], deployment_overrides(document))
    hidden.rename(hidden.with_name(hidden.name + ".gone"))
    env = serve_env(int(document["zkserve"]["ingress"]["max_request_bytes"]))
    serve.start(http_options=http_options(document), proxy_location="Disabled",
                controller_options={"runtime_env": {"env_vars": env}})
    serve.run(app, name=APP_NAME, route_prefix="/")
    print("deployed", flush=True)
    sys.stdin.read()
    serve.shutdown()
""")

# `zkserve score` as a user runs it, except that the package directory is renamed away the
# moment the job has put it in the object store (test instrumentation: no second disk here).
SCORE_DRIVER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from circuits.transport import PackageRef

    publish = PackageRef.publish.__func__

    def publish_then_hide(cls, package):
        ref = publish(cls, package)
        Path(package.root).rename(Path(str(package.root) + ".gone"))
        return ref

    PackageRef.publish = classmethod(publish_then_hide)
    from serve.cli import app
    sys.exit(app(sys.argv[1:]))
""")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    nodes = LocalCluster(tmp_path_factory.mktemp("two-nodes"), {"head": 2, "node2": 2}).start()
    try:
        yield nodes
    finally:
        nodes.stop()
    assert not nodes.processes(), "a process of the two-node cluster outlived the test"


def wait_for_app(address: str, driver: subprocess.Popen, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return wait_until_ready(address, timeout_s=5)
        except TimeoutError:
            assert driver.poll() is None, f"the app's driver exited: {driver.stdout.read()[-4000:]}"
            if time.monotonic() > deadline:
                raise


def cached(cache: Path, model_id: str) -> bool:
    return (cache / model_id.removeprefix("0x") / "manifest.json").is_file()


def test_attested_infer_answered_by_a_prover_on_the_second_node(cluster, mlp_package, tmp_path):
    head_state = tmp_path / "head-state"
    package_dir = copy_package(mlp_package, head_state / "packages")
    grpc_port, http_port = free_port(), free_port()
    document = serving_config(tmp_path / "ingress-state", grpc_port, http_port, default_attest="none",
                              prover_replicas=1, submit_proofs=False, models=[str(package_dir)])
    # the Prover only fits on the second node; the Ingress (and its proof records) stays on the head
    document["applications"] = [{"name": "zkserve", "deployments": [
        {"name": f"Prover-{mlp_package.name}", "ray_actor_options": {"resources": {NODE2: 0.1}}},
        {"name": "Ingress", "ray_actor_options": {"resources": {HEAD: 0.1}}}]}]
    config = tmp_path / "document.json"
    config.write_text(json.dumps(document))
    driver = subprocess.Popen([sys.executable, "-c", SERVE_DRIVER, str(config), str(head_state)], cwd=REPO,
                              env=cluster.client_env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        address = f"127.0.0.1:{grpc_port}"
        wait_for_app(address, driver)
        assert not head_state.exists() and (tmp_path / "head-state.gone").is_dir()
        inference = oip_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(address))
        rows = np.random.default_rng(7).uniform(-1, 1, (1, 16)).astype(np.float32)
        response = inference.ModelInfer(infer_request(mlp_package.name, "features", rows, attest="sync"), timeout=300)
        params = response.parameters
        assert params["model_id"].string_param == mlp_package.model_id
        assert params["proof_status"].string_param == "done", params["proof_error"].string_param
        assert params["proven_outputs_match"].bool_param is True
        np.testing.assert_allclose(output_array(response, "scores"), ort_run(mlp_package.onnx_path, "features", rows),
                                   rtol=1e-6)
        proof_json = proof_bytes(response)
        assert Proof.from_json(proof_json).proof_hash == params["proof_hash"].string_param
        assert verify_in_subprocess(mlp_package.root, [proof_json], tmp_path) == [True]
        # each node loaded the package from its own cache: the Prover on the second, the Ingress's ORT on the head
        assert cached(cluster.cache["node2"], mlp_package.model_id)
        assert cached(cluster.cache["head"], mlp_package.model_id)
        # the Ingress, the one writer of proof records, wrote this one on the head's disk
        assert list((tmp_path / "ingress-state" / "proofs").rglob("*"))
    finally:
        driver.stdin.close()
        try:
            driver.wait(timeout=60)
        except subprocess.TimeoutExpired:
            driver.send_signal(signal.SIGKILL)
            driver.wait()
        log = driver.stdout.read()
    assert "deployed" in log, log[-4000:]


def test_score_with_provers_on_the_second_node(cluster, mlp_package, mlp_rows, tmp_path):
    package_dir = copy_package(mlp_package, tmp_path / "head-state" / "packages")
    rows = mlp_rows[:4]  # calibration rows: inside the proven input domain
    np.save(tmp_path / "rows.npy", rows)
    job = tmp_path / "job"
    done = subprocess.run(
        [sys.executable, "-c", SCORE_DRIVER, "score", str(package_dir), "--input", str(tmp_path / "rows.npy"),
         "--output", str(job), "--provers", "1", "--prover-resource", f"{NODE2}=0.1", "--no-progress"],
        cwd=REPO, env=cluster.client_env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not package_dir.exists()  # the job ran without the head's copy
    assert cached(cluster.cache["node2"], mlp_package.model_id)
    assert (job / "errors.csv").read_text().strip() == "row_id,line,stage,reason", (job / "errors.csv").read_text()
    assert len(list((job / "proofs").glob("*.json"))) == len(rows)
    verified = run_cli("verify", str(job), "--model", str(mlp_package.root), "--input", str(tmp_path / "rows.npy"))
    assert verified.returncode == 0, verified.stdout + verified.stderr
