"""End to end: an audit-sampled `zkserve score --sample` job on a generated CSV, streamed.

The CSV (2,000,000 rows by default, env ZKSERVE_SCALE_ROWS) is generated in chunks under
tmp_path; the job (`--sample 0.0005`: every row inferred and committed, ~1,000 rows proven,
PROOF_BATCH rows per proof) runs in a child process that is killed with SIGKILL once half of
its row chunks are committed, then resumed; the resumed driver's peak RSS is measured and held
under RSS_BOUND_MB. `zkserve verify` re-derives the sample and the Merkle root; a tampered
unsampled output is caught by the root, a tampered sampled one by its proof, a changed input
line by the input check.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from circuits import CompileOptions
from circuits.demo import ensure_demo_packages
from serve.scoring import verify_job
from serve.scoring.inputs import CHUNK_ROWS

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
ROWS = int(os.environ.get("ZKSERVE_SCALE_ROWS", "2000000"))
SAMPLE = float(os.environ.get("ZKSERVE_SCALE_SAMPLE", "0.0005"))
PROOF_BATCH = 8
RSS_BOUND_MB = 800  # driver peak: ~400 MB is Ray, pyarrow and ORT before the first row, ~180 MB the provers


def generate_csv(path: Path, rows: int, package) -> Path:
    """Rows drawn inside the package's input domain (shrunk by 10% towards its centre), so that
    every row is inferred and committed, none refused."""
    low, high = domain_bounds(package)
    centre, half = (low + high) / 2, (high - low) / 2 * 0.9
    rng = np.random.default_rng(11)
    with open(path, "w") as out:
        out.write(",".join(f"f{i}" for i in range(len(low))) + "\n")
        for start in range(0, rows, 50_000):
            block = rng.uniform(centre - half, centre + half, (min(50_000, rows - start), len(low)))
            np.savetxt(out, block, fmt="%.4f", delimiter=",")
    return path


def domain_bounds(package) -> tuple[np.ndarray, np.ndarray]:
    from circuits.domain import InputDomain

    bounds = InputDomain.from_manifest(package.manifest).ranges[package.inputs[0]["name"]]
    return bounds.low, bounds.high


def run_score(args: list[str], kill_after_chunks: int | None = None, output: Path | None = None):
    """Runs `python -m serve.scoring` under /usr/bin/time-like RSS accounting (resource of the child)."""
    code = ("import resource, runpy, sys; sys.argv = ['serve.scoring'] + sys.argv[1:];\n"
            "try:\n runpy.run_module('serve.scoring', run_name='__main__')\n"
            "finally:\n print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)")
    process = subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if kill_after_chunks is not None:
        deadline = time.monotonic() + 900
        while len(list((output / "rows").glob("rows-*.parquet"))) < kill_after_chunks:
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
        return process.returncode, ""
    try:
        log, _ = process.communicate(timeout=900)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return process.returncode, log


@pytest.fixture(scope="module")
def sampled_job(tmp_path_factory):
    package = ensure_demo_packages(["demo-mlp"], CompileOptions(batch=PROOF_BATCH))["demo-mlp"]
    work = tmp_path_factory.mktemp("scale")
    started = time.monotonic()
    input_path = generate_csv(work / "rows.csv", ROWS, package)
    output = work / "job"
    args = ["demo-mlp", "--input", str(input_path), "--output", str(output), "--proof-batch", str(PROOF_BATCH),
            "--sample", str(SAMPLE), "--seed", "audit-2026", "--no-progress"]
    first_rc, _ = run_score(args, kill_after_chunks=max(1, ROWS // CHUNK_ROWS // 2), output=output)
    assert 0 < len(list((output / "rows").glob("rows-*.parquet"))) < -(-ROWS // CHUNK_ROWS)  # killed mid-way
    rc, log = run_score(args)
    assert rc == 0, log
    peak_mb = int(log.split("PEAK_RSS_KB")[1].split()[0]) / 1024
    seconds = time.monotonic() - started
    print(f"\nscale job: {ROWS} rows, sample {SAMPLE}, {seconds:.0f} s incl. generation; "
          f"driver peak RSS {peak_mb:.0f} MB")
    return {"input": input_path, "output": output, "package": package, "first_rc": first_rc, "log": log,
            "peak_mb": peak_mb}


def test_sampled_job_resumes_and_verifies(sampled_job):
    assert sampled_job["first_rc"] == -signal.SIGKILL
    assert "resuming" in sampled_job["log"]
    assert sampled_job["peak_mb"] < RSS_BOUND_MB, sampled_job["peak_mb"]
    summary = json.loads((sampled_job["output"] / "summary.json").read_text())
    assert summary["rows_total"] == ROWS and summary["rows_scored"] == ROWS
    audit = summary["audit"]
    assert audit["leaves"] == ROWS and audit["sample_size"] == int(np.ceil(ROWS * SAMPLE))
    assert audit["seed_source"] == "root_and_stated_seed"
    assert "(1-f)^k" in audit["guarantee"]["statement"]
    results = pq.ParquetFile(sampled_job["output"] / "results.parquet")
    assert results.metadata.num_rows == ROWS
    report = verify_job(sampled_job["output"], sampled_job["package"], sampled_job["input"])
    assert report.ok, report.describe()
    assert report.rows == ROWS and report.proofs_verified == report.proofs > 0
    assert report.proofs == int(np.ceil(audit["sample_size"] / PROOF_BATCH))


@pytest.fixture(scope="module")
def tampered(sampled_job, tmp_path_factory):
    """One copy of the job with an unsampled row's outputs and a sampled row's outputs changed, and
    the input file with one data line changed, checked by one `verify_job` run (a run reads every
    row, so the three tampers share it; each is found by its own row id)."""
    work = tmp_path_factory.mktemp("tampered")
    copy = work / "job"
    shutil.copytree(sampled_job["output"], copy)
    table = pq.read_table(copy / "results.parquet")
    flags = table.column("sampled").to_numpy(zero_copy_only=False)
    unsampled, sampled = int(np.flatnonzero(~flags)[0]), int(np.flatnonzero(flags)[0])
    scores = table.column("scores").combine_chunks()
    values = scores.flatten().to_numpy().copy()
    offsets = scores.offsets.to_numpy()
    for index in (unsampled, sampled):
        values[offsets[index] : offsets[index + 1]] += 0.5
    table = table.set_column(table.schema.get_field_index("scores"), "scores",
                             pa.ListArray.from_arrays(scores.offsets, pa.array(values)))
    pq.write_table(table, copy / "results.parquet")
    ids = table.column("row_id")
    changed = work / "rows.csv"
    with open(sampled_job["input"]) as source, open(changed, "w") as out:
        for number, line in enumerate(source):
            out.write("0.1" + line[line.index(","):] if number == 1001 else line)  # data row 1000
    report = verify_job(copy, sampled_job["package"], changed)
    return {"report": report, "unsampled": ids[unsampled].as_py(), "sampled": ids[sampled].as_py()}


def test_unsampled_output_tamper_caught_by_merkle_root(tampered):
    report, row_id = tampered["report"], tampered["unsampled"]
    assert not report.ok
    assert any("Merkle root" in problem for problem in report.problems)
    assert any(problem.startswith(f"row {row_id}: its outputs") for problem in report.problems)
    assert not any(f"row {row_id}: output" in problem for problem in report.problems)  # no proof covers it


def test_sampled_output_tamper_caught_by_proof(tampered):
    row_id = tampered["sampled"]
    assert any(f"sampled row {row_id}: output scores differs from its proof" in p for p in tampered["report"].problems)


def test_changed_input_line_caught(tampered):
    problems = tampered["report"].problems
    assert any("sha256 differs" in p for p in problems)
    assert any(p.startswith("row 1000 (line 1002)") for p in problems), problems[:5]


def test_submit_anchors_the_root_and_seeds_the_sample_with_its_block(tmp_path, module_anvil, monkeypatch):
    """--submit on a sampled job: the root is anchored on the real registry (anvil) before the
    sample is drawn, the seed is the anchoring block's hash, and the sampled proofs are attested
    by the real verifier service."""
    import ray

    from serve.chain.keys import ANVIL_DEV_KEY
    from serve.scoring import ScoreOptions, score
    from tests.e2e.conftest import VerifierProcess, dev_chain, setup_registry

    package = ensure_demo_packages(["demo-mlp"], CompileOptions(batch=PROOF_BATCH))["demo-mlp"]
    state_dir = tmp_path / "verifier-home"
    state_dir.mkdir()
    registry = setup_registry(module_anvil.url, state_dir, [package])
    monkeypatch.setenv("ZKSERVE_STATE_DIR", str(state_dir))
    monkeypatch.setenv("ZKSERVE_CHAIN_RPC_URL", module_anvil.url)
    monkeypatch.setenv("ZKSERVE_CHAIN_PRIVATE_KEY", ANVIL_DEV_KEY)
    input_path = generate_csv(tmp_path / "rows.csv", 2000, package)
    service = VerifierProcess(state_dir, module_anvil.url, [package.root])
    service.start()
    try:
        summary = score(ScoreOptions("demo-mlp", input_path, tmp_path / "job", proof_batch=PROOF_BATCH, sample=0.01,
                                     submit=True, verifier=service.target, progress=False))
    finally:
        service.stop()
        ray.shutdown()
    audit = summary.audit
    assert audit["seed_source"] == "anchor_block_hash" and audit["sample_size"] == 20
    anchor = audit["anchor"]
    on_chain = registry.anchor_info(audit["root"])
    assert on_chain["block_number"] == anchor["block_number"] and on_chain["count"] == 2000
    block = dev_chain(module_anvil.url).w3.eth.get_block(anchor["block_number"])
    assert "0x" + bytes(block["hash"]).hex() == audit["seed"]
    assert summary.attestation and set(summary.attestation) <= {"anchored", "attested"}
    report = verify_job(tmp_path / "job", package, input_path)
    assert report.ok, report.describe()
