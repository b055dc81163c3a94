"""Reading a proof's public instances back as numbers a client can compare.

The instances are the circuit's public inputs, in order: model inputs (or their Poseidon
hash when input visibility is `hashed`), then outputs (likewise). They are the only part
of proof.json that verification checks, so outputs are always read from here.
"""

from __future__ import annotations

import math

import ezkl
import numpy as np

from circuits.package import CircuitPackage
from circuits.proof import Proof


def _elements(entries: list[dict], batch: int) -> list[int]:
    return [batch * math.prod(entry["shape"][1:]) for entry in entries]


def _instance_layout(package: CircuitPackage) -> tuple[int, int]:
    """How many felts the inputs and the outputs take in the instance list."""
    visibility = package.manifest["visibility"]
    batch = package.batch_size
    counts = {
        "public": lambda entries: sum(_elements(entries, batch)),
        "hashed": lambda entries: 1,  # one Poseidon digest for all inputs (or outputs)
    }

    def width(kind: str, entries: list[dict]) -> int:
        return counts.get(visibility[kind], lambda _: 0)(entries)

    return width("input", package.inputs), width("output", package.outputs)


def _to_arrays(felts: list[str], entries: list[dict], batch: int, rows: int) -> list[np.ndarray]:
    arrays, offset = [], 0
    for entry, count in zip(entries, _elements(entries, batch), strict=False):
        values = [ezkl.felt_to_float(felt, entry["scale"]) for felt in felts[offset:offset + count]]
        offset += count
        arrays.append(np.asarray(values, dtype=np.float64).reshape([batch, *entry["shape"][1:]])[:rows])
    return arrays


def decode_outputs(package: CircuitPackage, proof: Proof) -> list[np.ndarray]:
    """The proven outputs as floats, one array per model output, padding rows dropped."""
    if package.manifest["visibility"]["output"] != "public":
        raise ValueError(
            f"{package.name}: outputs are {package.manifest['visibility']['output']}, not readable from the proof"
        )
    n_in, n_out = _instance_layout(package)
    felts = proof.instance_felts
    if len(felts) < n_in + n_out:
        raise ValueError(f"proof has {len(felts)} instances, {package.name} needs {n_in + n_out}")
    return _to_arrays(felts[n_in:n_in + n_out], package.outputs, package.batch_size, proof.rows)


def decode_inputs(package: CircuitPackage, proof: Proof) -> list[np.ndarray]:
    """The proven (quantized) inputs as floats; only for public input visibility."""
    if package.manifest["visibility"]["input"] != "public":
        raise ValueError(
            f"{package.name}: inputs are {package.manifest['visibility']['input']}, not readable from the proof"
        )
    n_in, _ = _instance_layout(package)
    return _to_arrays(proof.instance_felts[:n_in], package.inputs, package.batch_size, proof.rows)


def input_hash(package: CircuitPackage, inputs: list[np.ndarray]) -> str:
    """Recomputes the Poseidon digest a `hashed`-input proof carries, from the float inputs."""
    scale_of = [entry["scale"] for entry in package.inputs]
    felts = [
        ezkl.float_to_felt(float(value), scale)
        for array, scale in zip(inputs, scale_of, strict=False)
        for value in np.ravel(array)
    ]
    return ezkl.poseidon_hash(felts)[0]


def proven_input_hash(package: CircuitPackage, proof: Proof) -> str:
    if package.manifest["visibility"]["input"] != "hashed":
        raise ValueError(f"{package.name}: inputs are not hashed")
    return proof.instance_felts[0]
