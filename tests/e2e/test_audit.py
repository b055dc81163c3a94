"""`zkserve audit` end to end: proofs submitted to a real verifier service on a real anvil
(anchored and attested on chain), and a small `zkserve score --submit` job; each report is
rendered in headless Chromium and asserted on the text the browser shows."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from circuits import CompileOptions
from circuits.demo import ensure_demo_packages
from serve.app.store import ProofFiles
from serve.protocol.types import ProofRecord, ProofStatus
from tests.conftest import run_cli
from tests.e2e.conftest import VerifierProcess, setup_registry, tamper_output

pytestmark = pytest.mark.e2e
JOB_ROWS = 10
JOB_BATCH = 4
BAD_JOB_ROW = 3  # a NaN: listed in errors.csv


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium is not installed and `make chromium` could not install it (needs root and apt)")
    return path


def browser_text(page: Path, screenshot: Path | None = None, height: int = 2600) -> str:
    """The page as Chromium rendered it (DOM after parsing), tags stripped to visible text."""
    base = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0 and "<html" in dom.stdout, dom.stderr[-2000:]
    if screenshot is not None:
        shot = subprocess.run(
            [*base, f"--window-size=1200,{height}", f"--screenshot={screenshot}", page.as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert shot.returncode == 0 and screenshot.stat().st_size > 10_000, shot.stderr[-2000:]
    from html.parser import HTMLParser

    class Text(HTMLParser):
        def __init__(self):
            super().__init__()
            self.parts, self.skip = [], 0

        def handle_starttag(self, tag, attrs):
            self.skip += tag in ("style", "script")

        def handle_endtag(self, tag):
            self.skip -= tag in ("style", "script")

        def handle_data(self, data):
            if not self.skip:
                self.parts.append(data)

    parser = Text()
    parser.feed(dom.stdout)
    return " ".join(" ".join(parser.parts).split())


@pytest.fixture(scope="module")
def job_package():
    return ensure_demo_packages(["demo-mlp"], CompileOptions(batch=JOB_BATCH))["demo-mlp"]


@pytest.fixture(scope="module")
def service(module_anvil, tmp_path_factory, mlp_package, job_package):
    """The verifier service with both packages registered on the module's anvil."""
    state_dir = tmp_path_factory.mktemp("audit-verifier-home")
    setup_registry(module_anvil.url, state_dir, [mlp_package, job_package])
    process = VerifierProcess(state_dir, module_anvil.url, [mlp_package.root, job_package.root])
    client = process.start()
    yield process, client
    client.close()
    process.stop()


@pytest.fixture(scope="module")
def submitted(service, mlp_package, mlp_proofs):
    """One proof anchored in a Merkle batch, one attested on chain (full verification)."""
    _, client = service
    anchored, attested = mlp_proofs[0], mlp_proofs[1]
    client.submit(mlp_package.model_id, anchored, "anchor")
    client.submit(mlp_package.model_id, attested, "onchain")
    records = {
        name: client.wait_final(proof.proof_hash, 120)
        for name, proof in (("anchored", anchored), ("attested", attested))
    }
    return {"anchored": (anchored, records["anchored"]), "attested": (attested, records["attested"])}


def audit(tmp_path: Path, name: str, *args: str, service=None, anvil=None, env: dict | None = None):
    out = tmp_path / f"{name}.html"
    chain = ["--verifier", service.target, "--rpc-url", anvil.url] if service else []
    result = run_cli("audit", *args, "--out", str(out), *chain, env=env, timeout=300)
    report = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").is_file() else None
    return result, out, report


def facts(report: dict) -> dict[str, dict]:
    return {fact["label"]: fact for section in report["sections"] for fact in section["facts"]}


def test_audit_of_an_anchored_proof(tmp_path, submitted, service, module_anvil, mlp_package):
    proof, record = submitted["anchored"]
    proof_file = proof.save(tmp_path / "proof.json")
    result, page, report = audit(
        tmp_path, "anchored", proof.proof_hash, "--proof", str(proof_file), service=service[0], anvil=module_anvil
    )
    assert result.returncode == 0, result.stderr + result.stdout
    found = facts(report)
    assert found["Proof"]["value"] == "verified" and found["Proof"]["status"] == "verified"
    assert found["Proof hash"]["status"] == "verified"
    assert found["model_id"]["value"] == mlp_package.model_id and found["model_id"]["status"] == "verified"
    assert found["SRS"]["value"] == "INSECURE dev SRS"
    assert found["Registry binding"]["status"] == "verified" and found["Verifier contract"]["status"] == "verified"
    assert found["Merkle leaf"]["value"] == record.leaf and found["Merkle leaf"]["status"] == "verified"
    anchored = found["Anchored on chain"]
    assert anchored["status"] == "verified" and "isAnchored(leaf, path, root) returned true at block" in anchored["how"]
    assert found["Transaction"]["value"] == record.tx_hash and found["Transaction"]["status"] == "verified"
    outputs = next(s for s in report["sections"] if s["title"] == "Outputs")["tables"][0]
    from circuits import decode_outputs

    expected = ", ".join(f"{v:.6g}" for v in np.ravel(decode_outputs(mlp_package, proof)[0][0]))
    assert outputs["rows"][0][1] == expected and outputs["row_status"] == ["verified"]

    text = browser_text(page, tmp_path / "anchored.png")
    shutil.copy(tmp_path / "anchored.png", Path(__file__).resolve().parents[2] / ".zkserve" / "audit-anchored.png")
    assert mlp_package.model_id in text and proof.proof_hash in text
    assert "Proof verification failed" not in text and "Proof verified verified" in text
    assert record.merkle_root in text and f"root {record.merkle_root[:18]}..." in text
    assert "Every check passed" in text and "INSECURE dev SRS" in text


def test_audit_of_an_attested_proof_from_the_proof_store(tmp_path, submitted, service, module_anvil, mlp_package):
    """No --proof: the proof is found where the serving app's proof store keeps it."""
    proof, record = submitted["attested"]
    files = ProofFiles(tmp_path / "home" / "proofs")  # the app's ProofStore layout under ZKSERVE_HOME
    files.save_proof(proof.proof_hash, proof.to_json().encode())
    files.save_record(ProofRecord("p-1", "demo-mlp", mlp_package.model_id, ProofStatus.DONE, rows=1,
                                  created_at=100.0, finished_at=100.4, proof_hash=proof.proof_hash))
    files.close()
    result, page, report = audit(
        tmp_path,
        "attested",
        proof.proof_hash,
        "--model",
        str(mlp_package.root),
        service=service[0],
        anvil=module_anvil,
        env={"ZKSERVE_HOME": str(tmp_path / "home")},
    )
    assert result.returncode == 0, result.stderr + result.stdout
    found = facts(report)
    assert found["Proof document"]["value"].endswith(f"proofs/proofs/{proof.proof_hash}.json")
    assert found["Proof latency"]["value"] == "0.40 s" and found["Proof latency"]["status"] == "unproven"
    attested = found["Attested on chain"]
    assert attested["status"] == "verified" and attested["value"] == f"block {record.block_number}"
    text = browser_text(page)
    assert proof.proof_hash in text and "Attested on chain" in text and "verified" in text


def test_tampered_proof_shows_verification_failed(tmp_path, submitted, service, module_anvil):
    proof, _ = submitted["anchored"]
    bad = tamper_output(proof).save(tmp_path / "tampered.json")  # same proof bytes, one output changed
    result, page, report = audit(
        tmp_path, "tampered", proof.proof_hash, "--proof", str(bad), service=service[0], anvil=module_anvil
    )
    assert result.returncode == 1
    found = facts(report)
    assert found["Proof"]["value"] == "verification failed" and found["Proof"]["status"] == "failed"
    assert found["Merkle leaf"]["status"] == "failed"  # the leaf binds the real outputs, not these
    assert report["verdict"] == "failed"
    outputs = next(s for s in report["sections"] if s["title"] == "Outputs")["tables"][0]
    assert outputs["row_status"] == ["failed"] and "did NOT verify" in outputs["note"]
    text = browser_text(page, tmp_path / "tampered.png")
    shutil.copy(tmp_path / "tampered.png", Path(__file__).resolve().parents[2] / ".zkserve" / "audit-tampered.png")
    assert "verification failed" in text and "Some checks FAILED" in text


def test_unreachable_chain_is_shown_unchecked(tmp_path, submitted, service):
    from serve.ports import free_port

    proof, _ = submitted["anchored"]
    proof_file = proof.save(tmp_path / "proof.json")
    result, page, report = audit(
        tmp_path,
        "offline-chain",
        proof.proof_hash,
        "--proof",
        str(proof_file),
        "--verifier",
        service[0].target,
        "--rpc-url",
        f"http://127.0.0.1:{free_port()}",
    )
    assert result.returncode == 1
    found = facts(report)
    assert found["Proof"]["status"] == "verified"  # checked without the chain
    assert found["Registry binding"]["status"] == "unchecked" and "unreachable" in found["Registry binding"]["how"]
    assert found["On chain"]["status"] == "unchecked"
    assert "NOT CHECKED" in browser_text(page)


def write_rows(path: Path, rows: np.ndarray) -> Path:
    lines = [",".join(f"f{i}" for i in range(rows.shape[1]))]
    for row_id, row in enumerate(rows):
        cells = [repr(float(v)) for v in row]
        if row_id == BAD_JOB_ROW:
            cells[1] = "nan"
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_audit_of_a_scoring_job(tmp_path, service, module_anvil, mlp_rows, job_package):
    process, _ = service
    input_path = write_rows(tmp_path / "rows.csv", np.resize(mlp_rows, (JOB_ROWS, mlp_rows.shape[1])))
    job = tmp_path / "job"
    scored = run_cli(
        "score",
        "demo-mlp",
        "--input",
        str(input_path),
        "--output",
        str(job),
        "--proof-batch",
        str(JOB_BATCH),
        "--no-progress",
        "--submit",
        "--verifier",
        process.target,
        timeout=600,
    )
    assert scored.returncode == 0, scored.stderr[-3000:]

    result, page, report = audit(tmp_path, "job", str(job), service=process, anvil=module_anvil)
    assert result.returncode == 0, result.stderr + result.stdout
    found = facts(report)
    proofs = -(-(JOB_ROWS - 1) // JOB_BATCH)
    assert found["Proofs re-verified"]["value"] == f"{proofs} of {proofs}"
    assert found["Proofs on chain"]["value"] == f"{proofs} of {proofs}"
    assert found["Every row accounted for"]["value"] == f"{JOB_ROWS} of {JOB_ROWS}"
    assert found["Rows matching their proof"]["value"] == f"{JOB_ROWS - 1} of {JOB_ROWS - 1}"
    assert found["Input file"]["status"] == "verified"
    assert found["model_id"]["value"] == job_package.model_id
    errors = next(s for s in report["sections"] if s["title"] == "Errors")["tables"][0]
    assert [row[0] for row in errors["rows"]] == [str(BAD_JOB_ROW)]
    plots = next(s for s in report["sections"] if s["title"] == "Plots")["plots"]
    assert sum(plots[0]["series"][0]["y"]) == JOB_ROWS - 1  # one proven output per scored row
    assert len(plots[1]["series"][0]["y"]) == proofs

    text = browser_text(page, tmp_path / "job.png", height=3600)
    shutil.copy(tmp_path / "job.png", Path(__file__).resolve().parents[2] / ".zkserve" / "audit-job.png")
    assert job_package.model_id in text and "Every check passed" in text
    assert "anchored on chain (root 0x" in text and "NaN" in text
    assert "Distribution of the proven outputs" in text and "Proof latency over the job" in text

    # a changed output in results.parquet: the row no longer matches its proof, and the page says so
    import pyarrow as pa
    import pyarrow.parquet as pq

    copy = tmp_path / "changed-job"
    shutil.copytree(job, copy)
    table = pq.read_table(copy / "results.parquet")
    scores = table.column("scores").to_pylist()
    scores[0] = [value + 1.0 for value in scores[0]]
    pq.write_table(
        table.set_column(table.schema.get_field_index("scores"), "scores", pa.array(scores)), copy / "results.parquet"
    )
    result, page, report = audit(tmp_path, "changed-job", str(copy), "--offline")
    assert result.returncode == 1
    found = facts(report)
    assert found["Rows matching their proof"]["status"] == "failed"
    assert found["Rows matching their proof"]["value"] == f"{JOB_ROWS - 2} of {JOB_ROWS - 1}"
    assert found["Proofs re-verified"]["status"] == "verified"  # the proofs themselves are intact
    assert found["Proofs on chain"]["status"] == "unchecked"  # --offline: neither verifier nor chain asked
    assert "Some checks FAILED" in browser_text(page)
