"""`zkserve compile` as a user runs it: packages that prove, clear failures, caching, SRS."""

from __future__ import annotations

import json
from pathlib import Path

import ezkl
import numpy as np
import onnx
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
from circuits.demo import DEMO_INPUT_RANGE, demo_files
from circuits.demo.build import build
from circuits.hashing import sha256_file
from circuits.srs import TRUSTED_ENV
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


def test_cli_compiles_an_old_opset_fixed_batch_model_without_flags(tmp_path):
    """A Gemm model exported by PyTorch (shipped in the onnx wheel): opset 6, which ONNX
    Runtime no longer runs, and a fixed batch of 4. `compile` upgrades it, records the upgrade,
    takes the batch from the model, and the package proves without any extra flag."""
    model = ONNX_TEST_DATA / "pytorch-converted" / "test_Linear" / "model.onnx"
    done = run_cli("compile", str(model), "--name", "torch-linear", "--out", str(tmp_path / "pkg"))
    assert done.returncode == 0, done.stderr
    assert "random inputs" in done.stderr  # calibrating without data is allowed, with a warning
    assert "upgraded the model from opset 6 to 13" in done.stderr
    package = CircuitPackage.load(tmp_path / "pkg")
    assert package.batch_size == 4 and package.manifest["opset_upgrade"]["from"] == 6
    assert "Gemm(6)" in package.manifest["opset_upgrade"]["reason"]
    assert package.manifest["source_onnx"] == str(model)
    domain = package.manifest["input_domain"]["0"]
    assert domain["source"] == "calibration" and domain["low"] == [-1.2] * 10 and domain["high"] == [1.2] * 10
    rows = np.random.default_rng(1).uniform(-1, 1, (4, 10))
    proof = Prover(package).prove(rows)
    assert verify_proof(package, proof)
    import onnxruntime as ort
    expected = ort.InferenceSession(str(package.onnx_path)).run(None, {"0": rows.astype(np.float32)})[0]
    assert np.max(np.abs(decode_outputs(package, proof)[0] - expected)) <= package.tolerance


def test_cli_refuses_a_batch_other_than_the_models_fixed_one(tmp_path):
    model = ONNX_TEST_DATA / "pytorch-converted" / "test_Linear" / "model.onnx"
    done = run_cli("compile", str(model), "--name", "torch-linear", "--batch", "2", "--out", str(tmp_path / "pkg"))
    assert done.returncode == 1 and "fixed batch of 4" in done.stderr
    assert "Traceback" not in done.stderr


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
    assert "NonZero" in done.stderr  # the op EZKL cannot prove is named
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
    again = compile_model(model, "demo-mlp", CompileOptions(input_range=DEMO_INPUT_RANGE), calibration=calibration)
    assert again.root == mlp_package.root
    assert again.manifest["created"] == mlp_package.manifest["created"]


def test_srs_file_counts_as_ceremony_only_when_its_hash_is_trusted(tmp_path, mlp_rows, monkeypatch):
    # a larger SRS file stands in for a ceremony download: any k >= the circuit's logrows works
    ceremony = tmp_path / "ceremony-k12.srs"
    ezkl.gen_srs(str(ceremony), 12)
    digest = sha256_file(ceremony)
    monkeypatch.setenv(TRUSTED_ENV, digest)  # the operator's srs.trusted_sha256
    model, calibration = demo_files("demo-mlp")
    package = compile_model(model, "mlp-ceremony", CompileOptions(srs=ceremony), calibration=calibration,
                            out_dir=tmp_path / "pkg")
    assert package.srs_status == "ceremony" and package.insecure is False
    assert package.manifest["srs"]["source"] == str(ceremony) and package.manifest["srs"]["sha256"] == digest
    assert "INSECURE" not in package.describe()
    assert verify_proof(package, Prover(package).prove(mlp_rows[:1]))
    # the same package read by an operator who does not trust that file: unverified, insecure
    monkeypatch.delenv(TRUSTED_ENV)
    untrusted = CircuitPackage.load(package.root)
    assert untrusted.srs_status == "unverified" and untrusted.insecure
    assert CircuitPackage.load(package.root, trusted_srs=[digest]).srs_status == "ceremony"


def test_dev_srs_passed_as_srs_file_is_flagged_insecure(tmp_path, monkeypatch):
    """The SRS a dev compile generated, handed back as `--srs FILE`, is not laundered into a
    ceremony SRS: its hash is on no trusted list, so the package is "unverified SRS", insecure,
    with the same warning as a dev SRS; editing the manifest's flag changes nothing."""
    monkeypatch.delenv(TRUSTED_ENV, raising=False)
    model, calibration = demo_files("demo-mlp")
    dev = compile_model(model, "mlp-dev", CompileOptions(), calibration=calibration, out_dir=tmp_path / "dev")
    assert dev.srs_status == "dev" and dev.insecure
    done = run_cli("compile", str(model), "--name", "mlp-laundered", "--calibration", str(calibration),
                   "--srs", str(dev.srs_path), "--out", str(tmp_path / "pkg"))
    assert done.returncode == 0, done.stderr
    assert "INSECURE (unverified SRS)" in done.stderr
    package = CircuitPackage.load(tmp_path / "pkg")
    assert package.srs_status == "unverified" and package.insecure
    assert package.manifest["srs"]["status"] == "unverified" and package.manifest["insecure_srs"] is True
    assert "INSECURE unverified SRS" in package.describe()
    manifest = json.loads((tmp_path / "pkg" / "manifest.json").read_text())
    manifest["srs"] |= {"insecure": False, "status": "ceremony"}
    manifest["insecure_srs"] = False
    (tmp_path / "pkg" / "manifest.json").write_text(json.dumps(manifest))
    assert CircuitPackage.load(tmp_path / "pkg").insecure


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
