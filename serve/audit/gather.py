"""Gathering an audit: a proof by its hash, or a finished scoring job directory.

Pure fact gathering: reads files, asks the verifier service and the chain, runs EZKL
verification, and returns an `AuditReport`; rendering is elsewhere.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from circuits import CircuitPackage
from circuits.hashing import sha256_file
from serve.audit.checks import attestation_facts, check_one_proof, package_facts, registry_facts, short
from serve.audit.report import (
    FAILED,
    UNCHECKED,
    UNPROVEN,
    VERIFIED,
    WARNING,
    AuditReport,
    Fact,
    Plot,
    Section,
    Series,
    Table,
)
from serve.audit.sources import (
    AuditContext,
    find_package,
    find_proof,
    load_proof_file,
    now_iso,
    open_chain,
    verifier_record,
)
from serve.scoring.layout import JobLayout

MAX_ERRORS_SHOWN = 200
HISTOGRAM_BINS = 20


def _model_section(
    context: AuditContext,
    package: CircuitPackage | None,
    where: str,
    model_id: str | None,
    registry_address: str | None,
):
    chain, problem = open_chain(context, registry_address)
    facts = package_facts(package, where, model_id) + registry_facts(chain, problem, package, model_id)
    return Section("Model", tuple(facts)), chain, problem


def _package_for(model_ref: str | None, model_id: str | None, state_dir: Path) -> tuple[CircuitPackage | None, str]:
    if model_ref:
        return find_package(model_ref, state_dir)
    if model_id:
        return find_package(model_id, state_dir)
    return None, "no model id: neither a proof document nor a verifier record names one"


# ---- a proof, by hash ----


def audit_proof(
    proof_hash: str, context: AuditContext, proof_file: Path | None = None, model: str | None = None
) -> AuditReport:
    proof_hash = proof_hash.lower()
    source = find_proof(proof_hash, context.state_dir, proof_file)
    lookup = verifier_record(context.verifier, proof_hash)
    record = lookup.record
    model_id = source.proof.model_id if source.proof else (record.model_id if record is not None else None)
    package, where = _package_for(model, model_id, context.state_dir)
    model_section, chain, problem = _model_section(
        context, package, where, model_id, record.registry_address if record is not None else None
    )

    proof_facts: list[Fact] = []
    inputs: tuple[Table, ...] = ()
    outputs: tuple[Table, ...] = ()
    if source.proof is None:
        proof_facts.append(Fact("Proof document", "not found", UNCHECKED, source.where))
        proof_facts.append(Fact("Proof", "not re-verified", UNCHECKED, "no proof document to verify"))
    else:
        proof_facts.append(
            Fact(
                "Proof document",
                source.where,
                UNPROVEN,
                "read from this file; every fact below is recomputed from its proof bytes and instances",
            )
        )
        checked = check_one_proof(package, source.proof, proof_hash)
        proof_facts += checked.facts
        inputs, outputs = checked.inputs, checked.outputs
    if source.store_record:
        stored = source.store_record
        latency = (stored.get("finished_at") or 0) - (stored.get("created_at") or 0)
        proof_facts.append(
            Fact(
                "Proof latency",
                f"{latency:.2f} s" if latency > 0 else "?",
                UNPROVEN,
                f"proof store record {stored.get('proof_id')}: created_at to finished_at, "
                f"as the serving app wrote them",
            )
        )
    chain_facts = attestation_facts(
        chain, problem, lookup, proof_hash, package.model_id if package else model_id, source.proof
    )
    sections = (
        model_section,
        Section("Proof", tuple(proof_facts)),
        Section(
            "Input",
            tables=inputs or (Table("input", ("",), (("no verified proof document: unknown",),), "", (UNCHECKED,)),),
        ),
        Section(
            "Outputs",
            tables=outputs or (Table("outputs", ("",), (("no verified proof document: unknown",),), "", (UNCHECKED,)),),
        ),
        Section("Chain record", tuple(chain_facts)),
    )
    return AuditReport("proof", proof_hash, now_iso(), sections)


# ---- a scoring job ----


def audit_job(directory: Path, context: AuditContext, model: str | None = None) -> AuditReport:
    layout = JobLayout(Path(directory).resolve())
    if not layout.manifest.is_file():
        raise FileNotFoundError(f"{layout.root} holds no scoring job (job.json is missing)")
    job = json.loads(layout.manifest.read_text())
    summary = json.loads(layout.summary.read_text()) if layout.summary.is_file() else {}
    package, where = _package_for(model or None, job.get("model_id"), context.state_dir)
    if package is None and Path(str(job.get("model", ""))).is_dir():
        package, where = find_package(job["model"], context.state_dir)
    results = pq.read_table(layout.results).to_pylist() if layout.results.is_file() else None
    model_section, chain, problem = _model_section(
        context, package, where, job.get("model_id"), _registry_address(layout, results or [], context)
    )

    job_facts = [
        Fact("Job directory", str(layout.root), UNPROVEN, "as given"),
        Fact(
            "Model of the job",
            f"{job.get('model')} ({short(str(job.get('model_id')))})",
            UNPROVEN,
            "job.json; each proof below is verified under the package's key, which binds the model",
        ),
        Fact("Proof batch", str(job.get("proof_batch")), UNPROVEN, "job.json"),
        _input_file_fact(job),
    ]
    errors = _read_errors(layout.errors)
    if results is None:
        job_facts.append(Fact("Results", "missing", FAILED, f"{layout.results} is missing: the job has not finished"))
        results = []
    if not job.get("attest", True):
        job_facts.append(
            Fact(
                "Proofs",
                "none",
                WARNING,
                "job.json: the job ran with --no-attest; its outputs are "
                "ONNX Runtime's, no proof binds them to the model",
            )
        )
    attested = bool(job.get("attest", True))
    proofs = _check_job_proofs(layout, package, results if attested else [], context, chain, problem)
    totals = _totals(job, summary, results, errors, proofs, package)
    sections = (
        Section("Job", tuple(job_facts)),
        model_section,
        Section("Totals", tuple(totals)),
        Section("Proofs and chain records", tuple(proofs["facts"]), tables=(proofs["table"],)),
        Section("Errors", tables=(_errors_table(errors),)),
        Section("Plots", plots=(_output_plot(proofs["outputs"]), _latency_plot(proofs))),
    )
    return AuditReport("job", str(layout.root), now_iso(), sections)


def _registry_address(layout: JobLayout, results: list[dict], context: AuditContext) -> str | None:
    """The registry the verifier recorded the job's first proof in, if it knows the job."""
    for proof_id in sorted({str(row.get("proof_id")) for row in results}):
        path = layout.proof_path(proof_id)
        if path.is_file():
            try:
                proof_hash = load_proof_file(path).proof_hash
            except (OSError, ValueError, KeyError, TypeError):
                continue  # reported with the proof below
            record = verifier_record(context.verifier, proof_hash).record
            return record.registry_address if record is not None else None
    return None


def _input_file_fact(job: dict) -> Fact:
    path = Path(str(job.get("input_path", "")))
    expected = job.get("input_sha256", "")
    if not path.is_file():
        return Fact(
            "Input file",
            str(path),
            UNCHECKED,
            f"the input file is not there any more: its sha256 {short(expected)} in job.json cannot be checked",
        )
    digest = sha256_file(path)
    if digest == expected:
        return Fact(
            "Input file",
            str(path),
            VERIFIED,
            f"sha256 {short(digest)} recomputed at {now_iso()}; equals job.json's input_sha256",
        )
    return Fact(
        "Input file",
        str(path),
        FAILED,
        f"sha256 now {short(digest)}, job.json says {short(expected)}: the file changed since the job ran",
    )


def _read_errors(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _check_job_proofs(
    layout: JobLayout, package: CircuitPackage | None, results: list[dict], context: AuditContext, chain, problem: str
) -> dict:
    """Each proof of the job: present, its hash the rows', verified now, outputs per row,
    and its chain record checked when the verifier knows it."""
    by_proof: dict[str, list[dict]] = {}
    for row in results:
        by_proof.setdefault(str(row.get("proof_id")), []).append(row)
    output_names = [entry["name"] for entry in package.outputs] if package else []
    table_rows, statuses, facts = [], [], []
    outputs: dict[str, list[np.ndarray]] = {name: [] for name in output_names}
    verify_ms, commit_times = [], []
    counters = {
        "verified": 0,
        "failed": 0,
        "rows_match": 0,
        "rows_differ": 0,
        "anchored": 0,
        "chain_failed": 0,
        "chain_unchecked": 0,
        "not_submitted": 0,
    }
    for proof_id, rows in sorted(by_proof.items()):
        path = layout.proof_path(proof_id)
        if not path.is_file():
            table_rows.append((proof_id, "", str(len(rows)), "missing", "", ""))
            statuses.append(FAILED)
            counters["failed"] += 1
            continue
        try:
            proof = load_proof_file(path)
            proof.proof_bytes  # noqa: B018 - a malformed document fails here, not inside EZKL
        except (OSError, ValueError, KeyError, TypeError) as error:
            table_rows.append((proof_id, "", str(len(rows)), f"unreadable: {error}"[:200], "", ""))
            statuses.append(FAILED)
            counters["failed"] += 1
            continue
        commit_times.append(path.stat().st_mtime)
        checked = check_one_proof(package, proof)
        verify_ms.append(checked.verify_ms)
        counters["verified" if checked.verified else "failed"] += 1
        if checked.proven_outputs is not None:
            for row in rows:
                index = int(row["row_index"])
                if row.get("proof_hash") != proof.proof_hash or not 0 <= index < len(checked.proven_outputs[0]):
                    counters["rows_differ"] += 1
                    continue
                diff = max(
                    float(np.max(np.abs(np.ravel(row[name]) - np.ravel(array[index])), initial=0.0))
                    for name, array in zip(output_names, checked.proven_outputs, strict=False)
                )
                counters["rows_match" if diff <= package.tolerance else "rows_differ"] += 1
                for name, array in zip(output_names, checked.proven_outputs, strict=False):
                    outputs[name].append(np.ravel(array[index]))
        chain_status, chain_ok = _proof_chain_status(context, chain, problem, proof, package)
        counters[chain_ok] += 1
        verdict = "verified" if checked.verified else "verification failed"
        table_rows.append(
            (proof_id, short(proof.proof_hash, 22), str(len(rows)), verdict, f"{checked.verify_ms:.0f}", chain_status)
        )
        statuses.append(
            VERIFIED
            if checked.verified and chain_ok in ("anchored", "not_submitted")
            else FAILED
            if not checked.verified or chain_ok == "chain_failed"
            else UNCHECKED
        )
    total = len(by_proof)
    if total:
        facts.append(
            _count_fact(
                "Proofs re-verified",
                counters["verified"],
                total,
                f"ezkl.verify of each proof file with the key of model "
                f"{short(package.model_id, 26) if package else '?'} at {now_iso()}",
                unchecked=package is None,
            )
        )
        submitted = total - counters["not_submitted"]
        if submitted:
            facts.append(
                _count_fact(
                    "Proofs on chain",
                    counters["anchored"],
                    submitted,
                    "for each proof the verifier knows: leaf recomputed, isAnchored(leaf, path, root) "
                    "or registry.attestations called now",
                    unchecked=counters["chain_unchecked"] > 0,
                )
            )
        if counters["not_submitted"]:
            facts.append(
                Fact(
                    "Proofs not submitted",
                    str(counters["not_submitted"]),
                    WARNING,
                    f"no verifier record ({context.verifier or 'no verifier given'}): not attested on chain",
                )
            )
    columns = ("proof id", "proof hash", "rows", "re-verification", "verify ms", "chain (checked now)")
    table = Table("Proofs", columns, tuple(table_rows), "one line per proof file of the job", tuple(statuses))
    return {
        "facts": facts,
        "table": table,
        "outputs": outputs,
        "verify_ms": verify_ms,
        "commit_times": commit_times,
        "counters": counters,
    }


def _proof_chain_status(context, chain, problem, proof, package) -> tuple[str, str]:
    lookup = verifier_record(context.verifier, proof.proof_hash)
    if lookup.record is None:
        return (
            "not submitted" if lookup.answered else f"not checked: {lookup.note}",
            "not_submitted" if lookup.answered else "chain_unchecked",
        )
    facts = attestation_facts(chain, problem, lookup, proof.proof_hash, package.model_id if package else None, proof)
    on_chain = [
        f
        for f in facts
        if f.label in ("Anchored on chain", "Attested on chain", "Merkle leaf", "Transaction", "On chain")
    ]
    if any(f.status == FAILED for f in on_chain):
        return "FAILED: " + "; ".join(f.how for f in on_chain if f.status == FAILED)[:300], "chain_failed"
    if any(f.label in ("Anchored on chain", "Attested on chain") and f.status == VERIFIED for f in on_chain):
        return "; ".join(
            f"{f.label.lower()} ({f.value})" for f in on_chain if f.label in ("Anchored on chain", "Attested on chain")
        ), "anchored"
    return "not checked: " + "; ".join(f.how for f in on_chain)[:300], "chain_unchecked"


def _count_fact(label: str, good: int, total: int, how: str, unchecked: bool = False) -> Fact:
    status = UNCHECKED if unchecked else VERIFIED if good == total else FAILED
    return Fact(label, f"{good} of {total}", status, how)


def _totals(
    job: dict, summary: dict, results: list[dict], errors: list[dict], proofs: dict, package: CircuitPackage | None
) -> list[Fact]:
    counters = proofs["counters"]
    scored = [row["row_id"] for row in results]
    failed_rows = {int(row["row_id"]) for row in errors if row.get("stage") != "check"}
    facts = [
        Fact("Input rows", str(summary.get("rows_total", "?")), UNPROVEN, "summary.json, as the scorer counted them"),
        Fact(
            "Rows scored", str(len(scored)), UNPROVEN, "rows in results.parquet; each checked against its proof below"
        ),
        Fact(
            "Rows in errors.csv",
            str(len({row["row_id"] for row in errors})),
            UNPROVEN,
            "the scorer's reasons, shown in Errors",
        ),
    ]
    accounted = len(set(scored) | failed_rows)
    total = summary.get("rows_total")
    if total is None:
        facts.append(Fact("Every row accounted for", "?", UNCHECKED, "summary.json is missing: the job did not finish"))
    else:
        duplicates = len(scored) - len(set(scored))
        ok = accounted == total and duplicates == 0 and not (failed_rows & set(scored))
        facts.append(
            Fact(
                "Every row accounted for",
                f"{accounted} of {total}",
                VERIFIED if ok else FAILED,
                "each input row scored once or listed in errors.csv, never both"
                + (f"; {duplicates} row(s) scored twice" if duplicates else ""),
            )
        )
    if package is not None and scored and job.get("attest", True):
        checked = counters["rows_match"] + counters["rows_differ"]
        facts.append(
            Fact(
                "Rows matching their proof",
                f"{counters['rows_match']} of {len(scored)}",
                VERIFIED if counters["rows_match"] == len(scored) else FAILED,
                f"each row's outputs in results.parquet against the outputs decoded from its verified "
                f"proof, within the package tolerance {package.tolerance:.3g} ({checked} rows compared)",
            )
        )
    return facts


def _errors_table(errors: list[dict]) -> Table:
    rows = tuple(
        (row.get("row_id", ""), row.get("line", ""), row.get("stage", ""), row.get("reason", ""))
        for row in errors[:MAX_ERRORS_SHOWN]
    )
    note = "as the scorer wrote them in errors.csv"
    if len(errors) > MAX_ERRORS_SHOWN:
        note += f"; the first {MAX_ERRORS_SHOWN} of {len(errors)}"
    return Table("Errors", ("row", "file line", "stage", "reason"), rows or (("none", "", "", ""),), note)


def _output_plot(outputs: dict[str, list[np.ndarray]]) -> Plot:
    series = []
    for name, rows in outputs.items():
        if not rows:
            continue
        values = np.stack(rows)
        for column in range(values.shape[1]):
            series.append((f"{name}[{column}]", values[:, column]))
    if not series:
        return Plot(
            "Distribution of the proven outputs",
            "histogram",
            "output value",
            "rows",
            (),
            "no verified proof: no proven output to plot",
        )
    low = min(float(np.min(v)) for _, v in series)
    high = max(float(np.max(v)) for _, v in series)
    edges = np.linspace(low, high if high > low else low + 1.0, HISTOGRAM_BINS + 1)
    centers = tuple(float(c) for c in (edges[:-1] + edges[1:]) / 2)
    plotted = tuple(
        Series(label, centers, tuple(float(c) for c in np.histogram(values, edges)[0])) for label, values in series
    )
    return Plot(
        "Distribution of the proven outputs",
        "histogram",
        "output value",
        "rows",
        plotted,
        f"outputs decoded from the public instances of the verified proofs, one value per scored row "
        f"({len(series[0][1])} rows)",
    )


def _latency_plot(proofs: dict) -> Plot:
    verify_ms = proofs["verify_ms"]
    series = [
        Series("re-verification at report time (ms)", tuple(float(i) for i in range(len(verify_ms))), tuple(verify_ms))
    ]
    times = sorted(proofs["commit_times"])
    if len(times) > 1:
        gaps = [(later - earlier) * 1000 for earlier, later in zip(times, times[1:], strict=False)]
        series.append(
            Series(
                "time between proof files written (ms, file mtimes)",
                tuple(float(i) for i in range(1, len(times))),
                tuple(gaps),
            )
        )
    return Plot(
        "Proof latency over the job",
        "line",
        "proof (in order)",
        "milliseconds",
        tuple(series),
        "`zkserve score` records no proving time per proof; shown: the verification time measured by this "
        "audit, and the gaps between the proof files' modification times (unproven file metadata; proofs "
        "are written in chunks, so gaps inside a chunk are near zero)",
    )
