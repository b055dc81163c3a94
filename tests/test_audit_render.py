"""The audit page rendered from a constructed report (no server): hostile strings escaped,
unverified facts red, nothing external, and the JSON carrying the same facts; and the command
with neither verifier nor chain to ask (--offline)."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

from serve.audit.plots import render_svg
from serve.audit.render import render_html, render_json
from serve.audit.report import AuditReport, Fact, Plot, Section, Series, Table

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


class Elements(HTMLParser):
    """Every start tag with its attributes, and the cells of each <tr> row."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.rows: list[tuple[str, list[str]]] = []  # (class of the <tr>, its cells' text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "tr":
            self.rows.append((dict(attrs).get("class", ""), []))
        elif tag in ("td", "th") and self.rows:
            self.rows[-1][1].append("")

    def handle_data(self, data):
        if self.rows and self.rows[-1][1]:
            self.rows[-1][1][-1] += data


def report(**overrides) -> AuditReport:
    sections = (
        Section(
            "Model",
            (
                Fact("Model name", HOSTILE, "unproven", "from manifest.json"),
                Fact("model_id", "0x" + "ab" * 32, "verified", "sha256(vk.key) recomputed"),
                Fact("SRS", "INSECURE dev SRS", "warning", "generated locally"),
                Fact("Registry binding", "0x" + "cd" * 32, "unchecked", "chain at http://127.0.0.1:1 unreachable"),
            ),
        ),
        Section(
            "Proof",
            (Fact("Proof", "verification failed", "failed", f"ezkl.verify said no; reason {HOSTILE}"),),
            tables=(Table("scores", ("row", "values"), (("0", "0.25, 0.75"),), "decoded", ("failed",)),),
        ),
        Section(
            "Plots",
            plots=(
                Plot(
                    "Outputs",
                    "histogram",
                    "value",
                    "rows",
                    (Series(HOSTILE, (0.1, 0.2, 0.3), (1.0, 4.0, 2.0)),),
                    "note",
                ),
                Plot("Latency", "line", "proof", "ms", (Series("verify", (0.0, 1.0), (12.0, 15.0)),)),
            ),
        ),
    )
    return AuditReport(
        **(
            {"kind": "proof", "subject": "0x" + "12" * 32, "generated_at": "2026-12-01T00:00:00Z", "sections": sections}
            | overrides
        )
    )


def test_hostile_strings_are_escaped_everywhere():
    page = render_html(report())
    assert "<script>" not in page and "onerror=alert" not in page.replace("onerror=alert(1)&gt;", "")
    assert "&lt;script&gt;alert(" in page  # shown as text, in the fact table and the plot legend
    parser = Elements()
    parser.feed(page)
    tags = {tag for tag, _ in parser.tags}
    assert "script" not in tags and "img" not in tags
    # self-contained: no external stylesheet, script, image or font
    for tag, attrs in parser.tags:
        for name in ("src", "href"):
            assert name not in attrs or not attrs[name].startswith(("http", "//")), (tag, attrs)
    assert "<link" not in page and "@import" not in page and "url(" not in page


def test_failed_and_unchecked_facts_are_red_and_labelled():
    page = render_html(report())
    parser = Elements()
    parser.feed(page)
    rows = {cells[0].strip(): (css, [c.strip() for c in cells]) for css, cells in parser.rows if cells}
    assert rows["Registry binding"][0] == "s-unchecked" and rows["Registry binding"][1][2] == "NOT CHECKED"
    assert rows["Proof"][0] == "s-failed" and rows["Proof"][1][1:3] == ["verification failed", "FAILED"]
    assert rows["model_id"][0] == "s-verified" and rows["model_id"][1][2] == "verified"
    assert rows["SRS"][0] == "s-warning" and rows["SRS"][1][1] == "INSECURE dev SRS"
    assert rows["0"][0] == "s-failed"  # the decoded outputs of a proof that did not verify
    assert "verification failed" in page
    # the CSS paints those classes red
    assert ".s-failed .badge, .s-unchecked .badge { background: #cf222e" in page
    assert "Some checks FAILED" in page


def test_verdict_follows_the_worst_fact():
    assert report().verdict == "failed"
    clean = report(
        sections=(
            Section(
                "Model",
                (Fact("SRS", "INSECURE dev SRS", "warning", "dev"), Fact("model_id", "0x00", "verified", "re-hashed")),
            ),
        )
    )
    assert clean.verdict == "verified"
    assert "Every check passed (1 warning: read them)" in render_html(clean)
    unchecked = report(sections=(Section("Chain", (Fact("On chain", "?", "unchecked", "down"),)),))
    assert unchecked.verdict == "unchecked" and "could NOT be checked" in render_html(unchecked)
    with pytest.raises(ValueError, match="not one of"):
        Fact("x", "y", "trusted", "z")


def test_json_carries_the_same_facts():
    document = json.loads(render_json(report()))
    assert document["verdict"] == "failed" and document["counts"]["unchecked"] == 1
    facts = [fact for section in document["sections"] for fact in section["facts"]]
    assert {"label": "Model name", "value": HOSTILE, "status": "unproven", "how": "from manifest.json"} in facts
    assert document["sections"][2]["plots"][0]["series"][0]["y"] == [1.0, 4.0, 2.0]


def test_plots_are_inline_svg_with_escaped_labels():
    svg = render_svg(Plot("t<b>", "histogram", "x&y", "n", (Series(HOSTILE, (0.0, 1.0), (3.0, 5.0)),)))
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "<script" not in svg and "&lt;script&gt;" in svg and "x&amp;y" in svg
    assert svg.count("<rect") == 2 + 1  # two bars and the legend swatch
    empty = render_svg(Plot("none", "line", "x", "y", (), "no verified proof: no proven output to plot"))
    assert "no verified proof" in empty and "<polyline" not in empty


# ---- the command, with nothing to ask (no verifier, no chain): every such fact is red ----


def _audit_cli(*args: str, home):
    from typer.testing import CliRunner

    from serve.cli import app

    return CliRunner().invoke(app, ["audit", *args], env={"ZKSERVE_HOME": str(home)})


def test_offline_audit_of_an_unknown_proof_says_what_it_could_not_check(tmp_path):
    out = tmp_path / "report.html"
    result = _audit_cli("0x" + "ab" * 32, "--offline", "--out", str(out), home=tmp_path)
    assert result.exit_code == 1, result.output
    document = json.loads(out.with_suffix(".json").read_text())
    assert document["verdict"] == "unchecked"
    found = {fact["label"]: fact for section in document["sections"] for fact in section["facts"]}
    assert found["Proof document"]["status"] == "unchecked"
    assert str(tmp_path / "proofs" / "proofs") in found["Proof document"]["how"]
    assert found["Proof"]["status"] == "unchecked" and found["Registry binding"]["status"] == "unchecked"
    assert "Some facts could NOT be checked" in out.read_text()


def test_offline_audit_reverifies_a_real_proof(tmp_path, mlp_package, mlp_proof):
    from circuits import Proof

    proof_file = mlp_proof.save(tmp_path / "proof.json")
    out = tmp_path / "report.html"
    args = ["--proof", str(proof_file), "--model", str(mlp_package.root), "--offline", "--out", str(out)]
    result = _audit_cli(mlp_proof.proof_hash, *args, home=tmp_path)
    assert result.exit_code == 1, result.output  # the chain was not asked: unchecked, so not a clean report
    found = {f["label"]: f for s in json.loads(out.with_suffix(".json").read_text())["sections"] for f in s["facts"]}
    assert found["Proof"]["value"] == "verified" and found["Proof hash"]["status"] == "verified"
    assert found["model_id"]["value"] == mlp_package.model_id and found["SRS"]["value"] == "INSECURE dev SRS"
    assert found["On chain"]["status"] == "unchecked"

    tampered = Proof.from_json(mlp_proof.to_json())
    tampered.data["proof"][100] ^= 0x01  # other proof bytes: another hash, and no longer a valid proof
    tampered.save(proof_file)
    result = _audit_cli(mlp_proof.proof_hash, *args, home=tmp_path)
    found = {f["label"]: f for s in json.loads(out.with_suffix(".json").read_text())["sections"] for f in s["facts"]}
    assert found["Proof hash"]["status"] == "failed" and "it is another proof" in found["Proof hash"]["how"]
    assert found["Proof"]["value"] == "verification failed"


def test_audit_refuses_a_subject_that_is_neither_hash_nor_directory(tmp_path):
    result = _audit_cli("0x1234", home=tmp_path)
    assert result.exit_code == 2 and "neither a proof hash" in result.output


def test_offline_audit_of_a_hashed_input_proof_shows_the_commitment(tmp_path, mlp_rows):
    from circuits import CompileOptions, Prover, input_hash
    from circuits.demo import ensure_demo_packages

    package = ensure_demo_packages(["demo-mlp"], CompileOptions(input_visibility="hashed"))["demo-mlp"]
    proof = Prover(package).prove(mlp_rows[:1])
    proof_file = proof.save(tmp_path / "proof.json")
    out = tmp_path / "report.html"
    _audit_cli(proof.proof_hash, "--proof", str(proof_file), "--model", str(package.root), "--offline", "--out",
               str(out), home=tmp_path)
    sections = {s["title"]: s for s in json.loads(out.with_suffix(".json").read_text())["sections"]}
    commitment = sections["Input"]["tables"][0]
    assert commitment["title"] == "input commitment" and commitment["row_status"] == ["verified"]
    assert commitment["rows"] == [[input_hash(package, [mlp_rows[:1]])]]  # what a client recomputes from its rows
    assert sections["Outputs"]["tables"][0]["title"] == "scores"
