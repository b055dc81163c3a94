"""Circuit packages: proofs verify, tampering is rejected, packages are checked."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from circuits import (
    CircuitPackage,
    InputError,
    PackageError,
    Proof,
    Prover,
    decode_inputs,
    decode_outputs,
    proven_fields,
    proven_rows,
    verify_proof,
)
from tests.conftest import copy_package


def ort_outputs(package: CircuitPackage, rows: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(package.onnx_path), providers=["CPUExecutionProvider"])
    return session.run(None, {package.inputs[0]["name"]: rows.astype(np.float32)})[0]


@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_proof_verifies_and_its_outputs_match_onnx_runtime(request, which):
    package = request.getfixturevalue(f"{which}_package")
    proof = request.getfixturevalue(f"{which}_proof")
    rows = request.getfixturevalue(f"{which}_rows")[:1]
    assert verify_proof(package, proof)
    proven = decode_outputs(package, proof)[0]
    assert proven.shape == ort_outputs(package, rows).shape  # batch 1: the one row
    assert np.max(np.abs(proven - ort_outputs(package, rows))) <= package.tolerance
    assert np.allclose(decode_inputs(package, proof)[0], rows, atol=2.0 ** -package.inputs[0]["scale"])


def test_proof_survives_serialisation(mlp_package, mlp_proof, tmp_path):
    again = Proof.load(mlp_proof.save(tmp_path / "proof.json"))
    assert again.proof_hash == mlp_proof.proof_hash and again.model_id == mlp_package.model_id
    assert verify_proof(mlp_package, again)


def _tampered(proof: Proof, change) -> Proof:
    copy = Proof.from_json(proof.to_json())
    change(copy.data)
    return copy


def test_changed_proof_byte_is_rejected(mlp_package, mlp_proof):
    def flip(data):
        data["proof"][len(data["proof"]) // 2] ^= 0x01
    assert not verify_proof(mlp_package, _tampered(mlp_proof, flip))


def test_changed_output_instance_is_rejected(mlp_package, mlp_proof):
    def bump_last_output(data):
        felt = int.from_bytes(bytes.fromhex(data["instances"][0][-1]), "little") + 1
        data["instances"][0][-1] = felt.to_bytes(32, "little").hex()
    tampered = _tampered(mlp_proof, bump_last_output)
    assert decode_outputs(mlp_package, tampered)[0][0, -1] != decode_outputs(mlp_package, mlp_proof)[0][0, -1]
    assert not verify_proof(mlp_package, tampered)


def test_proof_of_another_model_is_rejected(mlp_package, cnn_proof):
    # even relabelled with this model's id, the CNN's proof fails against the MLP's key
    relabelled = Proof(model_id=mlp_package.model_id, data=cnn_proof.data)
    assert not verify_proof(mlp_package, relabelled)
    assert not verify_proof(mlp_package, cnn_proof)


def test_corrupted_package_file_is_refused_by_name(mlp_package, tmp_path):
    root = copy_package(mlp_package, tmp_path)
    with open(root / "pk.key", "r+b") as handle:
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(PackageError, match="pk.key"):
        CircuitPackage.load(root)


def test_package_whose_key_does_not_match_model_id_is_refused(mlp_package, tmp_path):
    root = copy_package(mlp_package, tmp_path)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["model_id"] = "0x" + "00" * 32
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match="model_id"):
        CircuitPackage.load(root)


@pytest.mark.parametrize("changed", ["settings.json", "kzg.srs"])
def test_model_id_covers_settings_and_srs(mlp_package, tmp_path, changed):
    """model_id hashes vk.key, settings.json and the SRS: a package whose settings or SRS were
    swapped (and re-hashed in the manifest's file list) no longer matches its model_id."""
    root = copy_package(mlp_package, tmp_path)
    path = root / changed
    if changed == "settings.json":
        settings = json.loads(path.read_text())
        settings["run_args"]["input_scale"] += 1
        path.write_text(json.dumps(settings))
    else:
        path.write_bytes(path.read_bytes() + b"\0")
    manifest = json.loads((root / "manifest.json").read_text())
    from circuits.hashing import sha256_file
    manifest["files"][changed] = sha256_file(path)
    manifest["srs"]["sha256"] = manifest["files"]["kzg.srs"]
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match="model_id"):
        CircuitPackage.load(root)


def test_tampered_rows_and_meta_change_nothing_reported(mlp_batch4_package, mlp_rows, tmp_path):
    """`rows` and `meta` are not bound by the proof: whatever a document says, a verifier reads
    the row count from the proven instances, and decoding never looks at the claim."""
    package = mlp_batch4_package
    honest = Prover(package).prove(mlp_rows[:2])
    assert honest.rows == 2
    document = json.loads(honest.to_json())
    reports = []
    for rows, meta in ((2, {}), (4, {"note": "four rows"}), (1, {"rows": 1}), (999, {})):
        tampered = Proof.from_json(json.dumps(document | {"rows": rows, "meta": meta}))
        assert tampered.rows == rows and not tampered.rows_proven  # only a claim, until verified
        assert verify_proof(package, tampered)
        reports.append((tampered.rows, tampered.rows_proven, tampered.proof_hash,
                        json.dumps(proven_fields(package, tampered), sort_keys=True),
                        [a.tolist() for a in decode_outputs(package, tampered)]))
    assert all(report == reports[0] for report in reports)
    assert reports[0][:2] == (2, True)
    fields = proven_fields(package, honest)
    assert fields["rows"] == 2 and fields["model_id"] == package.model_id and "meta" in fields["unproven"]
    assert np.allclose(np.asarray(fields["inputs"]["features"])[:2], mlp_rows[:2],
                       atol=2.0 ** -package.inputs[0]["scale"])


def test_bad_inputs_are_refused_before_proving(mlp_prover):
    with pytest.raises(InputError, match="shape"):
        mlp_prover.prove(np.zeros((1, 15)))
    with pytest.raises(InputError, match="NaN"):
        mlp_prover.prove(np.full((1, 16), np.nan))
    with pytest.raises(InputError, match="rows per proof"):
        mlp_prover.prove(np.zeros((2, 16)))


def test_batch_package_proves_padded_partial_batch(mlp_batch4_package, mlp_rows):
    package = mlp_batch4_package
    assert package.batch_size == 4 and package.inputs[0]["shape"] == [4, 16]
    proof = Prover(package).prove(mlp_rows[:3])
    assert proof.rows == 3 and proof.rows_proven and verify_proof(package, proof)
    assert proven_rows(package, proof) == 3  # read from the proven inputs: the fourth row is zero padding
    proven = decode_outputs(package, proof)[0]
    assert proven.shape == (4, 2)  # every row of the batch is proven, padding included
    assert np.max(np.abs(proven[:3] - ort_outputs(package, mlp_rows[:3]))) <= package.tolerance
    assert np.allclose(decode_inputs(package, proof)[0][3], 0)
