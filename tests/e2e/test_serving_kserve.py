"""The KServe Python SDK's REST client works unchanged against zkserve's KServe v2 REST (JSON tensors and the binary
tensor extension both ways).

The client runs in its own venv (.venv-kserve, kserve==0.21.0) as a subprocess. `make setup` (and so
`make test`) builds that venv; a missing or broken one fails the test, saying how to build it, rather
than skipping the REST SDK check.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from circuits import Proof
from tests.e2e.serving_helpers import REPO, ort_run, verify_in_subprocess

pytestmark = pytest.mark.e2e
KSERVE_VENV = Path(os.environ.get("ZKSERVE_KSERVE_VENV", REPO / ".venv-kserve"))
KSERVE_VERSION = "0.21.0"  # pinned in the Makefile's .venv-kserve target


@pytest.fixture(scope="session")
def kserve_python() -> Path:
    python = KSERVE_VENV / "bin" / "python"
    if not python.exists():
        pytest.fail(f"{KSERVE_VENV} is missing: run `make setup` (it builds the KServe SDK venv)")
    found = subprocess.run([str(python), "-c", "import importlib.metadata, kserve; "
                            "print(importlib.metadata.version('kserve'))"], capture_output=True, text=True)
    if found.returncode or found.stdout.strip() != KSERVE_VERSION:
        problem = found.stderr.strip()[-300:] if found.returncode else f"it holds kserve {found.stdout.strip()}"
        pytest.fail(f"{KSERVE_VENV} does not hold kserve {KSERVE_VERSION} ({problem}): "
                    f"remove it and run `make setup`")
    return python


def test_kserve_sdk_rest_client_gets_predictions_and_proofs(kserve_python, serving_app, mlp_package, tmp_path):
    ingress = serving_app.document["zkserve"]["ingress"]
    rows = np.random.default_rng(8).uniform(-1, 1, (1, 16)).astype(np.float32)
    np.save(tmp_path / "rows.npy", rows)
    done = subprocess.run([str(kserve_python), str(Path(__file__).with_name("kserve_client_check.py")),
                           f"http://{ingress['host']}:{ingress['http_port']}", str(tmp_path / "rows.npy")],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])

    assert seen["live"] and seen["ready"] and seen["model_ready"] and seen["id"] == "sdk-1"
    np.testing.assert_allclose(seen["scores"], ort_run(mlp_package.onnx_path, "features", rows), rtol=1e-6)
    assert seen["binary_answer"] is not None and int(seen["binary_answer"]) > 0  # answered with binary outputs
    np.testing.assert_allclose(seen["binary_scores"], ort_run(mlp_package.onnx_path, "features", rows), rtol=1e-6)
    params = seen["parameters"]
    assert params["model_id"] == mlp_package.model_id and params["proven_outputs_match"] is True
    assert Proof.from_json(seen["proof"].encode()).proof_hash == params["proof_hash"]
    assert verify_in_subprocess(mlp_package.root, [seen["proof"].encode()], tmp_path) == [True]
    assert seen["bad"][0] == 400 and "shape" in seen["bad"][1]
