"""End to end: `zkserve score` on real Ray Data actors with real EZKL proofs.

One job (demo-mlp, 8 rows per proof, a CSV with bad rows) is started in a child process,
killed with SIGKILL once some chunks are committed, and resumed; the tests then check the
finished job directory. About two minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from circuits import CompileOptions, Proof
from circuits.demo import ensure_demo_packages
from serve.commands.scoring import register
from serve.scoring import verify_job
from tests.conftest import run_cli

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
ROWS = 200
PROOF_BATCH = 8
# row id -> how the row is broken; row ids are 0-based data rows (the CSV header is line 1)
BAD_ROWS = {5: "nan", 17: "short", 42: "text", 100: "long", 150: "inf", 190: "huge"}


def write_csv(path: Path, rows: np.ndarray) -> Path:
    lines = [",".join(f"f{i}" for i in range(rows.shape[1]))]
    for row_id, row in enumerate(rows):
        cells = [repr(float(v)) for v in row]
        kind = BAD_ROWS.get(row_id)
        if kind == "nan":
            cells[3] = "nan"
        elif kind == "short":
            cells = cells[:-1]
        elif kind == "text":
            cells[7] = "n/a"
        elif kind == "long":
            cells.append("0.5")
        elif kind == "inf":
            cells[0] = "inf"
        elif kind == "huge":  # a valid number far outside the circuit's proven input domain
            cells[2] = "1e7"
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path


def score_args(input_path: Path, output: Path, *extra: str) -> list[str]:
    return ["demo-mlp", "--input", str(input_path), "--output", str(output), "--proof-batch", str(PROOF_BATCH),
            "--chunk-rows", "16", "--no-progress", *extra]


def start_scoring(args: list[str]) -> subprocess.Popen:
    # its own session, so the Ray processes it starts can be cleaned up after the SIGKILL
    return subprocess.Popen([sys.executable, "-m", "serve.scoring", *args], cwd=REPO, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def kill_session(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def committed_hashes(output: Path) -> dict[int, str]:
    hashes = {}
    for chunk in sorted((output / "chunks").glob("chunk-*.parquet")):
        for row in pq.read_table(chunk, columns=["row_id", "proof_hash"]).to_pylist():
            hashes[row["row_id"]] = row["proof_hash"]
    return hashes


@pytest.fixture(scope="module")
def scoring_job(tmp_path_factory, mlp_rows):
    """Runs the job, kills it mid-way with SIGKILL, resumes it; returns what each run left."""
    ensure_demo_packages(["demo-mlp"], CompileOptions(batch=PROOF_BATCH))  # compile outside the timed runs
    work = tmp_path_factory.mktemp("scoring")
    rng = np.random.default_rng(7)
    rows = np.resize(mlp_rows, (ROWS, mlp_rows.shape[1])) + rng.normal(0, 0.05, (ROWS, mlp_rows.shape[1]))
    rows = np.clip(rows, -1.0, 1.0)  # inside the demo's proven domain; BAD_ROWS breaks the chosen ones
    input_path = write_csv(work / "portfolio.csv", rows)
    output = work / "job"
    args = score_args(input_path, output)

    first = start_scoring(args)
    try:
        deadline = time.monotonic() + 240
        while len(list((output / "chunks").glob("chunk-*.parquet"))) < 2:
            assert first.poll() is None, f"scoring ended before it could be killed:\n{first.stdout.read()}"
            assert time.monotonic() < deadline, "no chunk committed within 240 s"
            time.sleep(0.2)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        kill_session(first)
    before = committed_hashes(output)

    second = start_scoring(args)
    try:
        log, _ = second.communicate(timeout=400)
    finally:
        kill_session(second)
    assert second.returncode == 0, log
    return {"input": input_path, "output": output, "rows": rows, "before": before, "first_rc": first.returncode,
            "log": log}


def test_killed_job_resumes_and_keeps_finished_work(scoring_job):
    assert scoring_job["first_rc"] == -signal.SIGKILL
    assert "resuming" in scoring_job["log"]
    before, output = scoring_job["before"], scoring_job["output"]
    assert 0 < len(before) < ROWS - len(BAD_ROWS)
    results = pq.read_table(output / "results.parquet").to_pylist()
    after = {row["row_id"]: row["proof_hash"] for row in results}
    # rows committed before the kill were not proven again (a new EZKL proof has a new hash)
    assert {row_id: after[row_id] for row_id in before} == before


def test_every_good_row_scored_once_with_a_valid_proof(scoring_job):
    output = scoring_job["output"]
    results = pq.read_table(output / "results.parquet").to_pylist()
    good = [row_id for row_id in range(ROWS) if row_id not in BAD_ROWS]
    assert [row["row_id"] for row in results] == good  # each once, in row order
    assert set(results[0]) >= {"row_id", "scores", "proof_id", "proof_hash", "proof_batch", "row_index"}
    proof_ids = {row["proof_id"] for row in results}
    # the out-of-domain row is refused before proving, so every batch is full but the last (padded)
    assert len(proof_ids) == -(-len(good) // PROOF_BATCH)
    assert {path.stem for path in (output / "proofs").glob("*.json")} == proof_ids
    for row in results[:3]:
        proof = Proof.load(output / "proofs" / f"{row['proof_id']}.json")
        assert proof.proof_hash == row["proof_hash"] and proof.rows == PROOF_BATCH
    report = verify_job(output)
    assert report.ok, report.describe()
    assert report.proofs_verified == len(proof_ids) and report.rows == len(good)
    summary = json.loads((output / "summary.json").read_text())
    assert summary["rows_total"] == ROWS and summary["rows_scored"] == len(good)


def test_bad_rows_are_listed_by_row_number(scoring_job):
    errors = (scoring_job["output"] / "errors.csv").read_text().splitlines()
    assert errors[0] == "row_id,line,stage,reason"
    listed = {int(line.split(",")[0]): line for line in errors[1:]}
    assert set(listed) == set(BAD_ROWS)
    assert "wrong width" in listed[17] and "wrong width" in listed[100]
    assert "NaN or infinite" in listed[5] and "NaN or infinite" in listed[150]
    assert "'n/a' is not a number" in listed[42]
    assert ",domain," in listed[190] and "outside the proven domain" in listed[190] and "feature 2" in listed[190]
    assert listed[42].split(",")[1] == "44"  # file line: header is line 1, row 0 is line 2


def test_verify_job_catches_a_changed_output(scoring_job, tmp_path):
    import shutil

    import pyarrow as pa

    copy = tmp_path / "job"
    shutil.copytree(scoring_job["output"], copy)
    table = pq.read_table(copy / "results.parquet")
    scores = table.column("scores").to_pylist()
    scores[10] = [value + 1.0 for value in scores[10]]
    table = table.set_column(table.schema.get_field_index("scores"), "scores", pa.array(scores))
    pq.write_table(table, copy / "results.parquet")
    report = verify_job(copy)
    assert not report.ok and any("differs from its proof" in problem for problem in report.problems)
    # the auditor's command says the same, by exit code, given the expected model and input file
    package = ensure_demo_packages(["demo-mlp"], CompileOptions(batch=PROOF_BATCH))["demo-mlp"]
    expected = ["--model", str(package.root), "--input", str(scoring_job["input"])]
    assert run_cli("verify", str(copy), *expected).returncode == 1
    verified = run_cli("verify", str(scoring_job["output"]), *expected)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    shown = verified.stdout + verified.stderr
    assert package.model_id in shown and "SRS" in shown
    missing = run_cli("verify", str(scoring_job["output"]))
    assert missing.returncode != 0 and "--model" in missing.stdout + missing.stderr


def test_verify_catches_an_input_line_changed_after_scoring(scoring_job, tmp_path):
    package = ensure_demo_packages(["demo-mlp"], CompileOptions(batch=PROOF_BATCH))["demo-mlp"]
    lines = scoring_job["input"].read_text().splitlines()
    cells = lines[11].split(",")  # data row 10 (line 1 is the header)
    cells[0] = repr(float(cells[0]) + 0.25)
    lines[11] = ",".join(cells)
    changed = tmp_path / "portfolio.csv"
    changed.write_text("\n".join(lines) + "\n")
    report = verify_job(scoring_job["output"], package, changed)
    assert any("sha256 differs" in p for p in report.problems)
    assert any(p.startswith("row 10: the input file's row differs from the proven input") for p in report.problems)
    assert verify_job(scoring_job["output"], package, scoring_job["input"]).ok


def test_rerun_with_other_arguments_is_refused(scoring_job, tmp_path):
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # two commands, so `score` is addressed by name as in zkserve
    output = scoring_job["output"]
    results_before = (output / "results.parquet").read_bytes()
    args = score_args(scoring_job["input"], output)
    args[args.index("--proof-batch") + 1] = "4"
    refused = CliRunner().invoke(app, ["score", *args])
    assert refused.exit_code == 2
    message = " ".join(refused.output.split())
    assert "other arguments" in message and "proof_batch" in message
    other_input = write_csv(tmp_path / "other.csv", scoring_job["rows"][:20])
    refused = CliRunner().invoke(app, ["score", *score_args(other_input, output)])
    assert refused.exit_code == 2 and "input_sha256" in " ".join(refused.output.split())
    assert (output / "results.parquet").read_bytes() == results_before


def test_submit_attests_every_row(scoring_job, tmp_path, module_anvil):
    """--submit added to the finished job: nothing is proven again, every proof goes to the
    real verifier service (anvil + registry), and every row gets its attestation status."""
    import shutil

    from tests.e2e.conftest import VerifierProcess, setup_registry

    package = ensure_demo_packages(["demo-mlp"], CompileOptions(batch=PROOF_BATCH))["demo-mlp"]
    state_dir = tmp_path / "verifier-home"
    state_dir.mkdir()
    registry = setup_registry(module_anvil.url, state_dir, [package])
    service = VerifierProcess(state_dir, module_anvil.url, [package.root])
    service.start()
    try:
        output = tmp_path / "job"
        shutil.copytree(scoring_job["output"], output)
        app = typer.Typer()
        register(app)
        app.command("noop")(lambda: None)
        done = CliRunner().invoke(app, ["score", *score_args(scoring_job["input"], output),
                                        "--submit", "--verifier", service.target, "--submit-timeout", "120"])
        assert done.exit_code == 0, done.output
    finally:
        service.stop()
    results = pq.read_table(output / "results.parquet").to_pylist()
    assert len(results) == ROWS - len(BAD_ROWS)
    assert {row["attestation"] for row in results} == {"anchored"}
    # usage on chain: the rows the proofs prove (read from their inputs), never their zero padding
    assert registry.usage(package.model_id)["anchored_rows"] == len(results)
    assert verify_job(output).ok
    again = CliRunner().invoke(app, ["score", *score_args(scoring_job["input"], output)])  # nothing left to do
    assert again.exit_code == 0, again.output
    assert pq.read_table(output / "results.parquet").to_pylist() == results  # statuses kept
