"""A stock tritonclient[grpc] client works unchanged against the ingress.

The client runs in its own venv (.venv-triton, `make .venv-triton`) as a subprocess;
the venv is created here when missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from circuits import Proof
from tests.e2e.serving_helpers import REPO, ort_run, verify_in_subprocess

pytestmark = pytest.mark.e2e
TRITON_VENV = Path(os.environ.get("ZKSERVE_TRITON_VENV", REPO / ".venv-triton"))
TRITON_REQUIREMENTS = ["tritonclient[grpc]==2.73.0", "numpy"]


@pytest.fixture(scope="session")
def triton_python() -> Path:
    python = TRITON_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(TRITON_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *TRITON_REQUIREMENTS], check=True, timeout=600)
    return python


def test_stock_tritonclient_gets_predictions_and_proofs(serving_app, triton_python, mlp_package, tmp_path):
    rows = np.random.default_rng(7).uniform(-1, 1, (1, 16)).astype(np.float32)
    np.save(tmp_path / "rows.npy", rows)
    done = subprocess.run([str(triton_python), str(Path(__file__).with_name("triton_client_check.py")),
                           serving_app.address, str(tmp_path / "rows.npy")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])

    assert seen["live"] and seen["ready"] and seen["model_ready"] and seen["server_name"] == "zkserve"
    assert seen["inputs"] == [["features", "FP32", [-1, 16]]]
    np.testing.assert_allclose(seen["scores"], ort_run(mlp_package.onnx_path, "features", rows), rtol=1e-6)
    params = seen["parameters"]
    assert params["model_id"] == mlp_package.model_id and params["proven_outputs_match"] is True
    proof = Proof.from_json(seen["proof"])
    assert proof.proof_hash == params["proof_hash"]
    assert verify_in_subprocess(mlp_package.root, [seen["proof"].encode()], tmp_path) == [True]
