"""Auditing a finished audit-sampled job (part of `zkserve verify DIR`).

Streams results.parquet: recomputes every row's leaf from its row id, input digest and
outputs, and the Merkle root over all of them (so every row's inclusion is checked against
the committed root); with the input file, compares each row's digest with the file's row.
Re-derives the sample from the committed root and seed and checks that exactly the sampled
rows were proven, each proof verifies, and its proven outputs (and inputs) match the row.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from circuits import CircuitPackage, Proof, decode_inputs, decode_outputs, verify_proof
from serve.scoring.commitment import StreamingRoot, chainless_seed, input_digest, row_leaf, sample_positions
from serve.scoring.layout import JobLayout

MAX_LISTED = 50


def check_sampled(layout: JobLayout, package: CircuitPackage, manifest: dict, report, input_path) -> None:
    commitment = json.loads(layout.commitment.read_text())
    report.sampled = {key: commitment.get(key) for key in ("root", "leaves", "sample_size", "seed_source", "seed")}
    problems = report.problems
    if commitment.get("model_id") != package.model_id:
        problems.append(f"the job committed to model {commitment.get('model_id')}, not {package.model_id}")
        return
    if not commitment["leaves"]:
        return
    output_names = [entry["name"] for entry in package.outputs]
    inputs = _input_rows(input_path, package) if input_path is not None else None
    root = StreamingRoot()
    sampled_rows: dict[int, dict] = {}
    positions = set(_derive_sample(commitment, problems))
    parquet = pq.ParquetFile(layout.results)
    last = -1
    for batch in parquet.iter_batches(batch_size=8192):
        for row in batch.to_pylist():
            if row["row_id"] <= last:
                problems.append(f"results.parquet is not in row order at row {row['row_id']}")
            last = row["row_id"]
            leaf = row_leaf(row["row_id"], row["input_digest"], [np.asarray(row[name]) for name in output_names])
            if leaf != row["leaf"] and len(problems) < MAX_LISTED:
                problems.append(f"row {row['row_id']}: its outputs or input digest were changed after the job "
                                f"committed to them (leaf differs)")
            if inputs is not None:
                _check_input_row(row, inputs, problems)
            if root.count in positions:
                sampled_rows[row["row_id"]] = row
            elif row["proof_id"]:
                problems.append(f"row {row['row_id']} carries a proof but is not in the sample drawn from the root")
            root.add(leaf)
    report.rows = root.count
    if root.count != commitment["leaves"] or "0x" + root.root.hex() != commitment["root"]:
        problems.append(f"Merkle root over the {root.count} rows of results.parquet is 0x{root.root.hex()}, the job "
                        f"committed to {commitment['root']} over {commitment['leaves']}: rows were changed, added or "
                        f"removed after the commitment")
    _check_sample_proofs(layout, package, sampled_rows, len(positions), report, inputs is not None)
    if inputs is not None:
        problems += proven_input_problems(layout, package, list(sampled_rows.values()), inputs.kept)


def _derive_sample(commitment: dict, problems: list[str]) -> list[int]:
    root = bytes.fromhex(commitment["root"][2:])
    if commitment["seed_source"] == "root_and_stated_seed":
        seed = chainless_seed(root, commitment.get("stated_seed", ""))
        if "0x" + seed.hex() != commitment["seed"]:
            problems.append("the recorded seed is not sha256(root || stated seed)")
    elif commitment["seed_source"] == "anchor_block_hash":
        seed = bytes.fromhex(commitment["seed"][2:])  # the block hash; its chain is checked with the anchor's tx
    else:
        problems.append(f"unknown seed source {commitment['seed_source']!r}")
        return []
    return sample_positions(seed, commitment["leaves"], commitment["sample_size"])


class _InputCursor:
    """The input file's good rows, read in step with results.parquet (both in row order)."""

    def __init__(self, path: Path, package: CircuitPackage):
        from serve.scoring.inputs import iter_chunks
        from serve.scoring.model import row_shape

        self._chunks = iter_chunks(path, row_shape(package))
        self._rows: list[tuple[int, np.ndarray, int | None]] = []
        self.kept: dict[int, np.ndarray] = {}

    def _fill(self) -> bool:
        for chunk in self._chunks:
            lines = chunk.lines if chunk.lines is not None else [None] * len(chunk.row_ids)
            self._rows = [(int(r), chunk.values[i], lines[i]) for i, r in enumerate(chunk.row_ids)][::-1]
            if self._rows:
                return True
        return False

    def take(self, row_id: int):
        """(values, line) of `row_id`, skipping file rows before it (rows the job refused)."""
        while True:
            if not self._rows and not self._fill():
                return None
            current = self._rows[-1]
            if current[0] > row_id:
                return None
            self._rows.pop()
            if current[0] == row_id:
                return current[1], current[2]


def _input_rows(path, package: CircuitPackage) -> _InputCursor:
    return _InputCursor(Path(path), package)


def _check_input_row(row: dict, inputs: _InputCursor, problems: list[str]) -> None:
    found = inputs.take(row["row_id"])
    if found is None:
        problems.append(f"row {row['row_id']} is not a readable row of the input file")
        return
    values, line = found
    if input_digest(values) != row["input_digest"]:
        where = f" (line {line})" if line else ""
        problems.append(f"row {row['row_id']}{where}: the input file's row differs from the row the job scored")
    if row["proof_id"]:
        inputs.kept[row["row_id"]] = values


def _check_sample_proofs(layout: JobLayout, package: CircuitPackage, sampled: dict[int, dict], wanted: int, report,
                         with_inputs: bool) -> None:
    problems = report.problems
    if len(sampled) != wanted:
        problems.append(f"{wanted} rows were to be sampled, {len(sampled)} were found")
    by_proof: dict[str, list[dict]] = {}
    for row in sampled.values():
        if not row["proof_id"]:
            problems.append(f"sampled row {row['row_id']} was not proven")
            continue
        by_proof.setdefault(row["proof_id"], []).append(row)
    report.proofs = len(by_proof)
    output_names = [entry["name"] for entry in package.outputs]
    for proof_id, rows in sorted(by_proof.items()):
        path = layout.proof_path(proof_id)
        if not path.is_file():
            problems.append(f"proof {proof_id} of sampled rows {[r['row_id'] for r in rows][:5]} is missing")
            continue
        proof = Proof.load(path)
        if not verify_proof(package, proof):
            problems.append(f"proof {proof_id} does not verify under model {package.model_id[:18]}...")
            continue
        report.proofs_verified += 1
        proven = decode_outputs(package, proof)
        for row in rows:
            if row["proof_hash"] != proof.proof_hash:
                problems.append(f"row {row['row_id']}: proof_hash {row['proof_hash']} is not {proof_id}'s")
            index = row["row_index"]
            if index is None or not 0 <= index < proof.rows:
                problems.append(f"row {row['row_id']}: row_index {index} outside proof {proof_id}")
                continue
            for name, array in zip(output_names, proven, strict=False):
                diff = float(np.max(np.abs(np.asarray(row[name]) - np.ravel(array[index])), initial=0.0))
                if diff > package.tolerance:
                    problems.append(f"sampled row {row['row_id']}: output {name} differs from its proof by "
                                    f"{diff:.3g} (tolerance {package.tolerance:.3g})")


def proven_input_problems(layout: JobLayout, package: CircuitPackage, results: list[dict],
                          inputs: dict[int, np.ndarray]) -> list[str]:
    """Rows whose proven (public) input is not their input file row, within one quantum of the input scale."""
    if package.manifest["visibility"]["input"] != "public":
        return []  # hashed inputs: the digest check is the Poseidon hash, done by the circuits helper's verify
    quantum = 2.0 ** -package.inputs[0]["scale"]
    problems: list[str] = []
    proofs: dict[str, list] = {}
    for row in results:
        if row.get("proof_id"):
            proofs.setdefault(row["proof_id"], []).append(row)
    for proof_id, rows in proofs.items():
        path = layout.proof_path(proof_id)
        if not path.is_file():
            continue
        proven = decode_inputs(package, Proof.load(path))[0]
        for row in rows:
            values = inputs.get(row["row_id"])
            if values is None:
                problems.append(f"row {row['row_id']} is not a readable row of the input file")
                continue
            diff = float(np.max(np.abs(np.ravel(values) - np.ravel(proven[row["row_index"]])), initial=0.0))
            if diff > quantum:
                problems.append(f"row {row['row_id']}: the input file's row differs from the proven input "
                                f"by {diff:.3g}")
    return problems
