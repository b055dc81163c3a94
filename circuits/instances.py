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


def _to_arrays(felts: list[str], entries: list[dict], batch: int) -> list[np.ndarray]:
    arrays, offset = [], 0
    for entry, count in zip(entries, _elements(entries, batch), strict=False):
        values = [ezkl.felt_to_float(felt, entry["scale"]) for felt in felts[offset:offset + count]]
        offset += count
        arrays.append(np.asarray(values, dtype=np.float64).reshape([batch, *entry["shape"][1:]]))
    return arrays


def _checked_felts(package: CircuitPackage, proof: Proof) -> list[str]:
    n_in, n_out = _instance_layout(package)
    felts = proof.instance_felts
    if len(felts) < n_in + n_out:
        raise ValueError(f"proof has {len(felts)} instances, {package.name} needs {n_in + n_out}")
    return felts


def decode_outputs(package: CircuitPackage, proof: Proof) -> list[np.ndarray]:
    """The proven outputs as floats, one array per model output, for every row of the circuit's
    batch (padding rows included: their outputs are proven too); index them by row. Nothing
    here reads the proof document's unbound fields."""
    if package.manifest["visibility"]["output"] != "public":
        raise ValueError(
            f"{package.name}: outputs are {package.manifest['visibility']['output']}, not readable from the proof"
        )
    n_in, n_out = _instance_layout(package)
    return _to_arrays(_checked_felts(package, proof)[n_in : n_in + n_out], package.outputs, package.batch_size)


def decode_inputs(package: CircuitPackage, proof: Proof) -> list[np.ndarray]:
    """The proven (quantized) inputs as floats, every row of the batch; only for public inputs."""
    if package.manifest["visibility"]["input"] != "public":
        raise ValueError(
            f"{package.name}: inputs are {package.manifest['visibility']['input']}, not readable from the proof"
        )
    n_in, _ = _instance_layout(package)
    return _to_arrays(_checked_felts(package, proof)[:n_in], package.inputs, package.batch_size)


_ZERO_FELT = "00" * 32


def proven_rows(package: CircuitPackage, proof: Proof) -> int | None:
    """The real rows of a proof, read from its proven inputs: the circuit's batch less the
    trailing rows whose inputs are all zero (the prover pads with zero rows, and proves at
    least one real row). None when the inputs are not public: the count is then unproven."""
    if package.manifest["visibility"]["input"] != "public":
        return None
    n_in, _ = _instance_layout(package)
    felts = _checked_felts(package, proof)[:n_in]
    batch = package.batch_size
    per_row = [math.prod(entry["shape"][1:]) for entry in package.inputs]
    rows = batch
    while rows > 1 and all(_row_is_zero(felts, per_row, batch, rows - 1, i) for i in range(len(per_row))):
        rows -= 1
    return rows


def _row_is_zero(felts: list[str], per_row: list[int], batch: int, row: int, which: int) -> bool:
    start = sum(batch * width for width in per_row[:which]) + row * per_row[which]
    return all(int(felt, 16) == 0 for felt in felts[start : start + per_row[which]])


def bind(package: CircuitPackage, proof: Proof) -> Proof:
    """Replaces the proof's unbound row count by the one its instances prove (or, where the
    instances cannot tell, the whole batch, marked unproven). Returns the same proof."""
    rows = proven_rows(package, proof)
    proof.rows, proof.rows_proven = (rows, True) if rows is not None else (package.batch_size, False)
    return proof


def proven_fields(package: CircuitPackage, proof: Proof) -> dict:
    """What a proof that verifies under `package` proves, and what beside it is unproven.

    For Verify answers and reports: model_id (the verification key, settings and SRS it
    hashes made the proof verify), the inputs (values, or their Poseidon hash), the outputs,
    and the row count when the instances bind it. The document's `rows` claim and `meta` are
    never listed as proven."""
    visibility = package.manifest["visibility"]
    rows = proven_rows(package, proof)
    summary: dict = {
        "model_id": package.model_id,
        "srs": package.srs_status,
        "insecure_srs": package.insecure,
        "batch_size": package.batch_size,
        "rows": rows if rows is not None else "unproven",
        "input_visibility": visibility["input"],
        "output_visibility": visibility["output"],
    }
    if visibility["input"] == "public":
        summary["inputs"] = {
            e["name"]: a.tolist() for e, a in zip(package.inputs, decode_inputs(package, proof), strict=False)
        }
    elif visibility["input"] == "hashed":
        summary["input_hash"] = proof.instance_felts[0]
    if visibility["output"] == "public":
        summary["outputs"] = {
            e["name"]: a.tolist() for e, a in zip(package.outputs, decode_outputs(package, proof), strict=False)
        }
    elif visibility["output"] == "hashed":
        n_in, _ = _instance_layout(package)
        summary["output_hash"] = proof.instance_felts[n_in]
    summary["unproven"] = ["meta"] + ([] if rows is not None else ["rows"])
    return summary


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
