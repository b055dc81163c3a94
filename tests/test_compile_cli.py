"""`zkserve compile` as a user runs it: packages that prove, clear failures, caching, SRS."""

from __future__ import annotations

import json
from pathlib import Path

import ezkl
import numpy as np
import onnx
import onnx.version_converter
from onnx import TensorProto, helper

from circuits import (
    CircuitPackage,
    CompileOptions,
    Prover,
    compile_model,
    decode_outputs,
    input_hash,
    proven_input_hash,
    verify_proof,
)
from circuits.demo import demo_files
from circuits.demo.build import build
from tests.conftest import ONNX_TEST_DATA, run_cli


def test_cli_compiles_demo_mlp_into_a_package_whose_proof_verifies(tmp_path, mlp_rows):
    model, calibration = demo_files("demo-mlp")
    done = run_cli("compile", str(model), "--name", "cli-mlp", "--calibration", str(calibration), "--dev-srs",
                   "--out", str(tmp_path / "pkg"))
    assert done.returncode == 0, done.stderr
    assert "INSECURE" in done.stderr
    package = CircuitPackage.load(tmp_path / "pkg")
    manifest = package.manifest
    assert manifest["name"] == "cli-mlp" and manifest["insecure_srs"] is True
    assert set(manifest["timings_s"]) >= {"settings", "calibrate", "setup", "verifier"}
    assert manifest["inputs"][0] == {"name": "features", "shape": [1, 16], "dtype": "float32", "scale": 13}
    assert package.verifier_artifact()["bytecode"].startswith("0x60")
    assert verify_proof(package, Prover(package).prove(mlp_rows[:1]))


def test_cli_compiles_a_pytorch_exported_model_from_the_onnx_test_suite(tmp_path):
    """A Gemm model exported by PyTorch (shipped in the onnx wheel), fixed batch 4, no calibration.

    It is stamped opset 6, older than ONNX Runtime runs, so it is first upgraded with onnx's
    own version converter, as a user would."""
    exported = onnx.load(ONNX_TEST_DATA / "pytorch-converted" / "test_Linear" / "model.onnx")
    model = tmp_path / "linear.onnx"
    onnx.save(onnx.version_converter.convert_version(exported, 13), model)
    done = run_cli("compile", str(model), "--name", "torch-linear", "--batch", "4", "--out", str(tmp_path / "pkg"))
    assert done.returncode == 0, done.stderr
    assert "random inputs" in done.stderr  # calibrating without data is allowed, with a warning
    package = CircuitPackage.load(tmp_path / "pkg")
    rows = np.random.default_rng(1).uniform(-1, 1, (4, 10))
    proof = Prover(package).prove(rows)
    assert verify_proof(package, proof)
    import onnxruntime as ort
    expected = ort.InferenceSession(str(model)).run(None, {"0": rows.astype(np.float32)})[0]
    assert np.max(np.abs(decode_outputs(package, proof)[0] - expected)) <= package.tolerance


def test_unsupported_op_fails_with_a_clear_message(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("NonZero", ["x"], ["idx"])], "unsupported",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("idx", TensorProto.INT64, [2, None])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "nonzero.onnx"
    onnx.save(model, path)
    done = run_cli("compile", str(path), "--name", "bad", "--out", str(tmp_path / "pkg"))
    assert done.returncode == 1
    assert "compile failed" in done.stderr and "stage 'settings'" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert not (tmp_path / "pkg").exists()


def test_not_an_onnx_file_fails_with_a_clear_message(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_text("not a model")
    done = run_cli("compile", str(path), "--name", "bad", "--out", str(tmp_path / "pkg"))
    assert done.returncode == 1 and "not a readable ONNX model" in done.stderr
    assert "Traceback" not in done.stderr


def test_second_compile_with_same_options_reuses_the_cache(mlp_package):
    model, calibration = demo_files("demo-mlp")
    again = compile_model(model, "demo-mlp", CompileOptions(), calibration=calibration)
    assert again.root == mlp_package.root
    assert again.manifest["created"] == mlp_package.manifest["created"]


def test_ceremony_srs_is_pinned_by_hash_and_not_flagged_insecure(tmp_path, mlp_rows):
    # a larger SRS file stands in for a ceremony download: any k >= the circuit's logrows works
    ceremony = tmp_path / "ceremony-k12.srs"
    ezkl.gen_srs(str(ceremony), 12)
    model, calibration = demo_files("demo-mlp")
    package = compile_model(model, "mlp-ceremony", CompileOptions(srs=ceremony), calibration=calibration,
                            out_dir=tmp_path / "pkg")
    assert package.insecure is False and package.manifest["insecure_srs"] is False
    assert package.manifest["srs"]["source"] == str(ceremony)
    assert "INSECURE" not in package.describe()
    assert verify_proof(package, Prover(package).prove(mlp_rows[:1]))


def test_hashed_inputs_prove_and_the_client_can_recompute_the_hash(tmp_path, mlp_rows):
    model, calibration = demo_files("demo-mlp")
    package = compile_model(model, "mlp-hashed", CompileOptions(input_visibility="hashed"), calibration=calibration,
                            out_dir=tmp_path / "pkg")
    proof = Prover(package).prove(mlp_rows[:1])
    assert verify_proof(package, proof)
    assert proven_input_hash(package, proof) == input_hash(package, [mlp_rows[:1]])
    assert proven_input_hash(package, proof) != input_hash(package, [mlp_rows[1:2]])
    assert decode_outputs(package, proof)[0].shape == (1, 2)


def test_demo_models_are_reproduced_by_their_script(tmp_path):
    build(tmp_path)
    for name in ("demo-mlp", "demo-cnn"):
        model, calibration = demo_files(name)
        assert (tmp_path / model.name).read_bytes() == model.read_bytes()
        assert np.array_equal(np.load(tmp_path / calibration.name), np.load(calibration))


def test_manifest_lists_every_package_file(mlp_package):
    listed = set(mlp_package.manifest["files"])
    on_disk = {p.name for p in Path(mlp_package.root).iterdir()} - {"manifest.json"}
    assert listed == on_disk


def test_tune_keeps_only_accurate_candidates_and_writes_the_fastest(tmp_path, mlp_rows):
    from circuits.tune import tune_and_compile
    model, calibration = demo_files("demo-mlp")
    knobs = [("decomp", [(1024, 3), (128, 4)]), ("scales", [(13,), (7,)])]
    package = tune_and_compile(model, "mlp-tuned", calibration=calibration, out_dir=tmp_path / "pkg",
                               max_error=0.005, knobs=knobs)
    table = package.manifest["tuning"]
    by_knobs = {json.dumps(t["knobs"], sort_keys=True): t for t in table["trials"]}
    assert len(by_knobs) == 4
    # scale 7 quantizes the demo MLP's outputs coarser than 0.005: tried, measured, refused
    coarse = by_knobs[json.dumps({"decomp": [128, 4], "scales": [7]}, sort_keys=True)]
    assert coarse["status"] == "inaccurate" and coarse["max_abs_error"] > 0.005
    accepted = [t for t in table["trials"] if t["status"] == "ok"]
    chosen = min(accepted, key=lambda t: t["prove_s"])
    assert table["chosen"] == chosen["knobs"]
    assert package.manifest["run_args"]["decomp_base"] == chosen["knobs"]["decomp"][0]
    assert package.manifest["calibration"]["max_abs_error"] <= 0.005
    assert verify_proof(package, Prover(package).prove(mlp_rows[:1]))
