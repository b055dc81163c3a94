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
from serve.scoring.layout import JobLayout
from serve.scoring.model import resolve_package


@dataclass
class JobReport:
    directory: str
    rows: int = 0
    proofs: int = 0
    proofs_verified: int = 0
    errors_listed: int = 0
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
            f"{self.errors_listed} rows in errors.csv"
        ]
        return "\n".join(lines + [f"  - {problem}" for problem in self.problems[:50]])


def verify_job(directory: str | Path, package: CircuitPackage | None = None) -> JobReport:
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
    results = pq.read_table(layout.results).to_pylist()
    report.rows = len(results)
    _check_accounting(layout, results, report)
    if manifest.get("attest", True):
        _check_proofs(layout, package, results, report)
    return report


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
                    report.problems.append(f"row {row['row_id']}: output {name} differs from its proof by {diff:.3g} "
                                           f"(tolerance {package.tolerance:.3g})")
