"""The models people have: PyTorch exports shipped with the onnx wheel's backend test data,
most at opsets ONNX Runtime no longer runs and with a fixed batch. Each is compiled with no
flag but its input domain (the test inputs are standard normal draws), proven, verified, and
its proven outputs compared with the expected outputs shipped beside it."""

from __future__ import annotations

import time

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from circuits import CompileOptions, Prover, compile_model, decode_outputs, verify_proof
from tests.conftest import ONNX_TEST_DATA

# small models, logrows <= 15 each; the first four are at opset 6 (or AveragePool 1), which
# ONNX Runtime cannot run, and are upgraded by compile
MODELS = [
    "test_Linear", "test_AvgPool2d", "test_BatchNorm2d_eval", "test_PReLU_2d",
    "test_BatchNorm1d_3d_input_eval", "test_AvgPool1d", "test_PReLU_1d", "test_Softsign",
    "test_ReLU", "test_LeakyReLU", "test_Conv1d", "test_Conv2d", "test_Conv2d_no_bias", "test_MaxPool1d",
    "test_ZeroPad2d",
]
OLD_OPSET = {"test_Linear", "test_AvgPool2d", "test_BatchNorm2d_eval", "test_PReLU_2d",
             "test_BatchNorm1d_3d_input_eval", "test_AvgPool1d", "test_PReLU_1d", "test_Softsign"}


def _tensor(path) -> np.ndarray:
    return numpy_helper.to_array(onnx.load_tensor(str(path)))


@pytest.mark.parametrize("name", MODELS)
def test_exported_model_compiles_proves_and_matches_its_expected_output(name, tmp_path):
    folder = ONNX_TEST_DATA / "pytorch-converted" / name
    given = _tensor(folder / "test_data_set_0" / "input_0.pb")
    expected = _tensor(folder / "test_data_set_0" / "output_0.pb")
    bound = float(np.ceil(np.max(np.abs(given))))  # the domain the user states for their inputs
    started = time.perf_counter()
    package = compile_model(folder / "model.onnx", name.removeprefix("test_"),
                            CompileOptions(input_range=(-bound, bound)), out_dir=tmp_path / "pkg")
    assert package.manifest["logrows"] <= 15
    assert package.batch_size == given.shape[0]  # the model's fixed batch, without --batch
    upgrade = package.manifest["opset_upgrade"]
    assert (upgrade is not None) == (name in OLD_OPSET)
    if upgrade:
        assert upgrade["to"] == 13 and "NOT_IMPLEMENTED" in upgrade["reason"]
    assert package.input_domain.violation(package.inputs[0]["name"], given) is None
    proof = Prover(package).prove(given)
    assert verify_proof(package, proof)
    proven = decode_outputs(package, proof)[0].reshape(expected.shape)
    assert np.max(np.abs(proven - expected)) <= package.tolerance, name
    print(f"{name}: compile + prove {time.perf_counter() - started:.1f}s")
