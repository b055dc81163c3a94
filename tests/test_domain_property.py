"""Property: any row inside a demo model's recorded input domain proves outputs that match
ONNX Runtime within the manifest's tolerance (real EZKL proofs, verified)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from circuits import Prover, decode_outputs, verify_proof


def _rows_in(domain_entry: dict, shape: list[int]):
    """Rows anywhere in the box: each feature a float between its low and high (ends included)."""
    low, high = domain_entry["low"], domain_entry["high"]
    features = [st.floats(lo, hi, allow_nan=False, allow_infinity=False) for lo, hi in zip(low, high, strict=False)]
    return st.tuples(*features).map(lambda values: np.asarray(values, dtype=np.float64).reshape(shape))


@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_proofs_inside_the_domain_match_onnx_runtime(request, which):
    package = request.getfixturevalue(f"{which}_package")
    prover = Prover(package)
    session = ort.InferenceSession(str(package.onnx_path), providers=["CPUExecutionProvider"])
    entry = package.inputs[0]
    domain = package.manifest["input_domain"][entry["name"]]

    @settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(_rows_in(domain, [1, *entry["shape"][1:]]))
    def check(row):
        assert package.input_domain.violation(entry["name"], row) is None
        proof = prover.prove(row)
        assert verify_proof(package, proof)
        proven = decode_outputs(package, proof)[0]
        expected = session.run(None, {entry["name"]: row.astype(np.float32)})[0]
        assert np.max(np.abs(proven - expected)) <= package.tolerance

    check()
