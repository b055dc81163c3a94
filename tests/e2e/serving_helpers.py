"""Request builders and checks shared by the serving tests (no fixtures here)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnxruntime as ort
from inference import grpc_service_pb2 as oip

REPO = Path(__file__).resolve().parents[2]


def infer_request(model: str, name: str, rows: np.ndarray, attest: str | None = None, raw: bool = True,
                  datatype: str = "FP32") -> oip.ModelInferRequest:
    request = oip.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name=name, datatype=datatype, shape=list(rows.shape))
    if raw:
        request.raw_input_contents.append(rows.tobytes())
    else:
        tensor.contents.fp32_contents.extend(rows.ravel().tolist())
    if attest is not None:
        request.parameters["attest"].string_param = attest
    return request


def ort_run(onnx_path: str | Path, name: str, rows: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return session.run(None, {name: rows})[0]


def verify_in_subprocess(package_root: str | Path, proofs: list[bytes], tmp: Path) -> list[bool]:
    """Verifies proofs in a fresh interpreter with only the package's verification key."""
    paths = []
    for index, proof in enumerate(proofs):
        path = tmp / f"proof-{index}.json"
        path.write_bytes(proof)
        paths.append(str(path))
    script = textwrap.dedent("""
        import json, sys
        from circuits import CircuitPackage, Proof, verify_proof
        package = CircuitPackage.load(sys.argv[1])
        print(json.dumps([verify_proof(package, Proof.load(p)) for p in sys.argv[2:]]))
    """)
    done = subprocess.run([sys.executable, "-c", script, str(package_root), *paths], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 or done.stdout.strip(), done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
