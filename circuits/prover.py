"""Proving and verifying inferences of one circuit package with EZKL."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

import ezkl
import numpy as np

from circuits.instances import bind
from circuits.package import CircuitPackage
from circuits.proof import Proof


class InputError(ValueError):
    """Inputs that do not fit the circuit (shape, count, non-finite values)."""


def prepare_inputs(package: CircuitPackage, inputs: np.ndarray | Sequence[np.ndarray]) -> tuple[list[np.ndarray], int]:
    """Checks inputs against the manifest and zero-pads them to the circuit's batch size."""
    arrays = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
    if len(arrays) != len(package.inputs):
        raise InputError(f"{package.name} takes {len(package.inputs)} input(s), got {len(arrays)}")
    rows = None
    padded = []
    for array, entry in zip(arrays, package.inputs, strict=False):
        array = np.asarray(array, dtype=np.float64)
        row_shape = list(entry["shape"][1:])
        if array.ndim == len(row_shape):  # a single row without its batch dimension
            array = array[None, ...]
        if list(array.shape[1:]) != row_shape:
            raise InputError(
                f"input {entry['name']!r}: expected rows of shape {row_shape}, got {list(array.shape[1:])}"
            )
        if not np.isfinite(array).all():
            raise InputError(f"input {entry['name']!r} holds NaN or infinite values")
        if rows is not None and array.shape[0] != rows:
            raise InputError("all inputs must have the same number of rows")
        rows = array.shape[0]
        if not 1 <= rows <= package.batch_size:
            raise InputError(f"{package.name} proves 1 to {package.batch_size} rows per proof, got {rows}")
        pad = np.zeros((package.batch_size - rows, *row_shape))
        padded.append(np.concatenate([array, pad]) if len(pad) else array)
    return padded, rows


def write_input_json(arrays: list[np.ndarray], path: Path) -> Path:
    path.write_text(json.dumps({"input_data": [np.ravel(a).tolist() for a in arrays]}))
    return path


class Prover:
    """Proves inferences of one package. Keep one per process: EZKL holds the GIL while
    it proves and uses every core through rayon, so parallelism comes from processes."""

    def __init__(self, package: CircuitPackage):
        self.package = package
        # EZKL's Python API reads keys from paths on every call; keeping the package on
        # local disk (page cache) is what "loaded once" amounts to here.
        self._paths = {kind: str(package.path(kind)) for kind in ("compiled", "pk", "vk", "srs", "settings")}

    def witness(self, inputs: np.ndarray | Sequence[np.ndarray], workdir: Path) -> tuple[Path, int]:
        arrays, rows = prepare_inputs(self.package, inputs)
        witness_path = workdir / "witness.json"
        ezkl.gen_witness(
            str(write_input_json(arrays, workdir / "input.json")), self._paths["compiled"], str(witness_path)
        )
        return witness_path, rows

    def prove(self, inputs: np.ndarray | Sequence[np.ndarray]) -> Proof:
        with tempfile.TemporaryDirectory(prefix="zkserve-prove-") as tmp:
            witness_path, rows = self.witness(inputs, Path(tmp))
            proof_path = Path(tmp) / "proof.json"
            ezkl.prove(
                str(witness_path), self._paths["compiled"], self._paths["pk"], str(proof_path), self._paths["srs"]
            )
            data = json.loads(proof_path.read_text())
        # Verification never reads these copies of the proof and its inputs; dropping them
        # leaves no unchecked field for a reader to trust by mistake.
        for unchecked in ("hex_proof", "pretty_public_inputs"):
            data.pop(unchecked, None)
        # the row count every reader will see is the one the instances prove, not this call's
        return bind(self.package, Proof(model_id=self.package.model_id, data=data, rows=rows))

    def verify(self, proof: Proof) -> bool:
        return verify_proof(self.package, proof)


def verify_proof(package: CircuitPackage, proof: Proof) -> bool:
    """True only if the proof verifies against this package's key; tampering gives False.
    A proof that verifies is bound to the package: its row count is re-derived from its
    instances (`instances.bind`), whatever its document said."""
    if proof.model_id != package.model_id:
        return False
    with tempfile.TemporaryDirectory(prefix="zkserve-verify-") as tmp:
        proof_path = Path(tmp) / "proof.json"
        proof_path.write_text(json.dumps(proof.data))
        try:
            valid = bool(
                ezkl.verify(str(proof_path), str(package.settings_path), str(package.vk_path), str(package.srs_path))
            )
        except (RuntimeError, ValueError, OSError):  # EZKL raises on a bad proof
            return False
    if valid:
        try:
            bind(package, proof)
        except ValueError:  # instances that do not fit the package's layout
            return False
    return valid
