"""Offline check of a finished scoring job directory (`zkserve verify DIR`).

Checks, with nothing but the job directory and the circuit package: every proof verifies
under the job's model, each row's proof hash is its proof's, each row's outputs match the
outputs proven for it (decode_outputs, within the circuit's tolerance), and every input
row is accounted for exactly once (scored or listed in errors.csv).
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from circuits import CircuitPackage, Proof, decode_outputs, verify_proof
from circuits.hashing import sha256_file
from serve.scoring.layout import JobLayout
from serve.scoring.model import resolve_package


@dataclass
class JobReport:
    directory: str
    rows: int = 0
    proofs: int = 0
    proofs_verified: int = 0
    errors_listed: int = 0
    model_id: str = ""
    srs: str = ""
    input_checked: bool = False
    sampled: dict | None = None  # a sampled job: root recomputed, sample re-derived
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return asdict(self) | {"ok": self.ok}

    def describe(self) -> str:
        verdict = "OK" if self.ok else f"FAILED ({len(self.problems)} problem(s))"
        lines = [
            f"{self.directory}: {verdict}: {self.rows} rows, {self.proofs_verified}/{self.proofs} proofs verified, "
            f"{self.errors_listed} rows in errors.csv",
            f"  model {self.model_id}; SRS: {self.srs}; input file "
            + ("re-hashed and checked row by row" if self.input_checked else "NOT checked (give --input)"),
        ]
        if self.sampled:
            lines.append(
                f"  audit sample: {self.sampled['sample_size']} of {self.sampled['leaves']} rows, seed from "
                f"{self.sampled['seed_source']}, Merkle root {self.sampled['root']}"
            )
        return "\n".join(lines + [f"  - {problem}" for problem in self.problems[:50]])


def verify_job(
    directory: str | Path, package: CircuitPackage | None = None, input_path: str | Path | None = None
) -> JobReport:
    """`package`: the model the auditor expects (default: the job's own); `input_path`: the
    input file, re-hashed and compared with every row's committed or proven input."""
    layout = JobLayout(Path(directory).resolve())
    report = JobReport(str(layout.root))
    for required in (layout.manifest, layout.results, layout.errors):
        if not required.is_file():
            report.problems.append(f"{required.name} is missing: the job has not finished (re-run `zkserve score`)")
    if report.problems:
        return report
    manifest = json.loads(layout.manifest.read_text())
    package = package or _job_package(manifest)
    if package.model_id != manifest["model_id"]:
        report.problems.append(
            f"package {package.root} has model_id {package.model_id}, the job used {manifest['model_id']}"
        )
        return report
    report.model_id = package.model_id
    report.srs = (
        "INSECURE dev SRS (whoever made it can forge proofs)"
        if package.insecure
        else f"sha256 {package.manifest['srs'].get('sha256', '?')}"
    )
    if input_path is not None:
        report.input_checked = True
        if sha256_file(Path(input_path)) != manifest["input_sha256"]:
            report.problems.append(f"input file {input_path} is not the file the job scored (sha256 differs)")
    if layout.commitment.is_file():
        from serve.scoring.audit import check_sampled

        check_sampled(layout, package, manifest, report, input_path)
        return report
    results = pq.read_table(layout.results).to_pylist()
    report.rows = len(results)
    _check_accounting(layout, results, report)
    if manifest.get("attest", True):
        _check_proofs(layout, package, results, report)
    if input_path is not None and manifest.get("attest", True):
        _check_proven_inputs(layout, package, results, Path(input_path), report)
    return report


def _check_proven_inputs(
    layout: JobLayout, package: CircuitPackage, results: list[dict], input_path: Path, report: JobReport
) -> None:
    """Every row's proven (quantized) input equals its row of the input file, within one quantum."""
    from serve.scoring.audit import proven_input_problems
    from serve.scoring.inputs import iter_chunks
    from serve.scoring.model import row_shape

    wanted = {row["row_id"]: row for row in results}
    rows: dict[int, np.ndarray] = {}
    for chunk in iter_chunks(input_path, row_shape(package)):
        for index, row_id in enumerate(chunk.row_ids):
            if int(row_id) in wanted:
                rows[int(row_id)] = chunk.values[index]
    report.problems += proven_input_problems(layout, package, results, rows)


def _job_package(manifest: dict) -> CircuitPackage:
    """The package the job was scored with: its directory, or the cached demo compile."""
    model = manifest["model"]
    return resolve_package(model, manifest["proof_batch"] if not Path(model).is_dir() else None)


def _check_accounting(layout: JobLayout, results: list[dict], report: JobReport) -> None:
    with open(layout.errors, newline="") as handle:
        errors = list(csv.DictReader(handle))
    report.errors_listed = len({row["row_id"] for row in errors})
    scored = [row["row_id"] for row in results]
    if len(scored) != len(set(scored)):
        report.problems.append(f"{len(scored) - len(set(scored))} row(s) appear more than once in results.parquet")
    unscored_errors = {int(row["row_id"]) for row in errors if row["stage"] != "check"}
    both = unscored_errors & set(scored)
    if both:
        report.problems.append(f"rows both scored and failed: {sorted(both)[:10]}")
    summary = json.loads(layout.summary.read_text()) if layout.summary.is_file() else {}
    total = summary.get("rows_total")
    if total is not None and len(set(scored) | unscored_errors) != total:
        report.problems.append(
            f"{total} input rows, but {len(set(scored) | unscored_errors)} are scored or listed as errors"
        )


def _check_proofs(layout: JobLayout, package: CircuitPackage, results: list[dict], report: JobReport) -> None:
    by_proof: dict[str, list[dict]] = {}
    for row in results:
        by_proof.setdefault(row["proof_id"], []).append(row)
    report.proofs = len(by_proof)
    output_names = [entry["name"] for entry in package.outputs]
    for proof_id, rows in sorted(by_proof.items(), key=lambda item: str(item[0])):
        path = layout.proof_path(str(proof_id))
        if not proof_id or not path.is_file():
            report.problems.append(f"proof {proof_id} of rows {[r['row_id'] for r in rows][:5]} is missing")
            continue
        proof = Proof.load(path)
        if not verify_proof(package, proof):
            report.problems.append(f"proof {proof_id} does not verify under model {package.model_id[:18]}...")
            continue
        report.proofs_verified += 1
        proven = decode_outputs(package, proof)
        for row in rows:
            if row["proof_hash"] != proof.proof_hash:
                report.problems.append(f"row {row['row_id']}: proof_hash {row['proof_hash']} is not {proof_id}'s")
            if not 0 <= row["row_index"] < proof.rows:
                report.problems.append(f"row {row['row_id']}: row_index {row['row_index']} outside proof {proof_id}")
                continue
            for name, array in zip(output_names, proven, strict=False):
                diff = float(np.max(np.abs(np.asarray(row[name]) - np.ravel(array[row["row_index"]])), initial=0.0))
                if diff > package.tolerance:
                    report.problems.append(
                        f"row {row['row_id']}: output {name} differs from its proof by {diff:.3g} "
                        f"(tolerance {package.tolerance:.3g})"
                    )
