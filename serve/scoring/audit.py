"""Auditing a finished audit-sampled job (part of `zkserve verify DIR`).

Streams results.parquet: recomputes every row's leaf from its row id, input digest and
outputs, and the Merkle root over all of them (so every row's inclusion is checked against
the committed root); with the input file, compares each row's digest with the file's row.
Re-derives the sample from the committed root and seed and checks that exactly the sampled
rows were proven, each proof verifies, and its proven outputs (and inputs) match the row.
"""

from __future__ import annotations

import bisect
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from circuits import CircuitPackage, Proof, decode_inputs, decode_outputs, verify_proof
from serve.scoring.commitment import (
    StreamingRoot,
    chainless_seed,
    input_digests,
    row_leaf,
    row_leaves,
    sample_positions,
)
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
    widths = [math.prod(entry["shape"][1:]) for entry in package.outputs]
    inputs = _InputCursor(Path(input_path), package) if input_path is not None else None
    root = StreamingRoot()
    sampled_rows: dict[int, dict] = {}
    positions = sorted(set(_derive_sample(commitment, problems)))
    parquet = pq.ParquetFile(layout.results)
    last = -1
    for batch in parquet.iter_batches(batch_size=8192):
        ids = batch.column("row_id").to_numpy(zero_copy_only=False)
        if len(ids) and (ids[0] <= last or (np.diff(ids) <= 0).any()):
            steps = np.flatnonzero(np.diff(np.concatenate([[last], ids])) <= 0)
            problems.append(f"results.parquet is not in row order at row {ids[steps[0]]}")
        last = int(ids[-1]) if len(ids) else last
        leaves = _batch_leaves(batch, ids, output_names, widths)
        committed = _hashes(batch.column("leaf"))
        for index in _differing(leaves, committed)[: max(0, MAX_LISTED - len(problems))]:
            problems.append(f"row {ids[index]}: its outputs or input digest were changed after the job "
                            f"committed to them (leaf differs)")
        if inputs is not None:
            inputs.check(ids, batch, problems)
        low = bisect.bisect_left(positions, root.count)
        high = bisect.bisect_left(positions, root.count + len(ids))
        picked = np.asarray(positions[low:high], dtype=np.int64) - root.count
        for row in batch.take(pa.array(picked, pa.int64())).to_pylist():
            sampled_rows[row["row_id"]] = row
        carries = np.array(batch.column("proof_id").is_valid(), dtype=bool)
        carries[picked] = False
        for index in np.flatnonzero(carries):
            problems.append(f"row {ids[index]} carries a proof but is not in the sample drawn from the root")
        root.extend(leaves[start:start + 32] for start in range(0, len(leaves), 32))
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


def _hashes(column) -> bytes:
    """A binary(32) column as n x 32 bytes; a null or missing cell reads as 32 zero bytes (no leaf matches it)."""
    if column.null_count == 0 and column.type == pa.binary(32):  # the common case: the column's own bytes
        return column.buffers()[1].to_pybytes()[column.offset * 32 : (column.offset + len(column)) * 32]
    return b"".join(value if value is not None and len(value) == 32 else bytes(32) for value in column.to_pylist())


def _differing(first: bytes, second: bytes) -> np.ndarray:
    """Indices of the 32-byte hashes that differ between two equal-length runs of them."""
    a, b = (np.frombuffer(blob, np.uint8).reshape(-1, 32) for blob in (first, second))
    return np.flatnonzero((a != b).any(axis=1))


def _batch_leaves(batch, ids: np.ndarray, output_names: list[str], widths: list[int]) -> bytes:
    """The leaf of every row of a results batch, recomputed from its row id, input digest and outputs.
    A row whose outputs have the wrong length (or none) is hashed as it stands, row by row."""
    digests = _hashes(batch.column("input_digest"))
    outputs, regular = [], True
    for name, width in zip(output_names, widths, strict=False):
        column = batch.column(name)
        lengths = np.asarray(pc.fill_null(pc.list_value_length(column), -1))
        if column.null_count or (lengths != width).any():
            regular = False
            break
        flat = np.asarray(column.flatten().to_numpy(zero_copy_only=False), np.float64)
        outputs.append(flat.reshape(len(ids), width))
    if regular:
        return row_leaves(ids, digests, outputs)
    cells = [batch.column(name).to_pylist() for name in output_names]
    return b"".join(
        row_leaf(int(row_id), digests[32 * i : 32 * i + 32], [np.asarray(c[i] or [], np.float64) for c in cells])
        for i, row_id in enumerate(ids)
    )


class _InputCursor:
    """The input file's good rows, read in step with results.parquet (both in row order)."""

    def __init__(self, path: Path, package: CircuitPackage):
        from serve.scoring.inputs import iter_chunks
        from serve.scoring.model import row_shape

        self._chunks = iter_chunks(path, row_shape(package))
        self._ids = np.zeros(0, np.int64)
        self._values = np.zeros((0, 1))
        self._lines = np.zeros(0, np.int64)
        self._ended = False
        self.kept: dict[int, np.ndarray] = {}
        self._listed = 0

    def _fill_to(self, row_id: int) -> None:
        """Buffers file rows until the buffer reaches past `row_id` or the file ends."""
        while not self._ended and (not len(self._ids) or self._ids[-1] < row_id):
            chunk = next(self._chunks, None)
            if chunk is None:
                self._ended = True
                break
            lines = chunk.lines if chunk.lines is not None else np.full(len(chunk.row_ids), -1)
            values = chunk.values.reshape(len(chunk.row_ids), -1)
            if not len(self._ids):
                self._ids, self._values, self._lines = chunk.row_ids, values, lines
            else:
                self._ids = np.concatenate([self._ids, chunk.row_ids])
                self._values = np.concatenate([self._values, values])
                self._lines = np.concatenate([self._lines, lines])

    def check(self, ids: np.ndarray, batch, problems: list[str]) -> None:
        """Each row's input digest against its row of the file; keeps the proven rows' values."""
        if not len(ids):
            return
        self._fill_to(int(ids[-1]))
        where = np.minimum(np.searchsorted(self._ids, ids), max(len(self._ids) - 1, 0))
        found = self._ids[where] == ids if len(self._ids) else np.zeros(len(ids), bool)
        digests = _hashes(batch.column("input_digest"))
        values = self._values[where[found]] if found.any() else np.zeros((0, 1))
        file_digests = np.zeros((len(ids), 32), np.uint8)
        file_digests[found] = np.frombuffer(input_digests(values), np.uint8).reshape(-1, 32)
        differs = found & (file_digests != np.frombuffer(digests, np.uint8).reshape(-1, 32)).any(axis=1)
        for index in np.flatnonzero(~found | differs):
            if self._listed >= MAX_LISTED:
                problems.append("... more input rows differ; not listed")
                self._listed = -(10**18)  # say it once
                break
            self._listed += 1
            if not found[index]:
                problems.append(f"row {ids[index]} is not a readable row of the input file")
            else:
                line = int(self._lines[where[index]])
                where_text = f" (line {line})" if line > 0 else ""
                problems.append(f"row {ids[index]}{where_text}: the input file's row differs from the row the job "
                                f"scored")
        for index in np.flatnonzero(found & np.asarray(batch.column("proof_id").is_valid())):
            self.kept[int(ids[index])] = self._values[where[index]]
        keep = self._ids > ids[-1]  # rows past this batch stay for the next one
        self._ids, self._values, self._lines = self._ids[keep], self._values[keep], self._lines[keep]


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
