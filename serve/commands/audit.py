"""`zkserve audit 0xPROOF_HASH | JOB_DIR`: an audit report as one HTML page and as JSON."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from serve.commands.progress import console
from serve.config import ConfigError, load_config

HASH_RE = re.compile(r"^0x[0-9a-fA-F]{64}$")


def _context(config: Path | None, verifier: str | None, rpc_url: str | None, offline: bool):
    from serve.audit.sources import AuditContext
    from serve.chain.connect import local_chain_url

    try:
        zk = load_config(config)["zkserve"]
    except ConfigError as error:
        console.print(f"[red]config:[/red] {error}")
        raise typer.Exit(2) from None
    chain = zk["chain"]
    return AuditContext(
        state_dir=Path(zk["state_dir"]),
        verifier=None if offline else verifier or f"{zk['verifier']['host']}:{zk['verifier']['port']}",
        rpc_url=None if offline else rpc_url or chain.get("rpc_url") or local_chain_url(chain),
        chain_id=None if rpc_url else int(chain["chain_id"]),
    )


def audit_command(
    subject: str = typer.Argument(..., help="0x + 64 hex (a proof hash), or a `zkserve score` job directory"),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        dir_okay=False,
        help="HTML file to write (default: audit-<subject>.html here); the JSON goes beside it with .json",
    ),
    proof: Path | None = typer.Option(
        None, "--proof", exists=True, dir_okay=False, help="the proof document (default: the serving app's proof store)"
    ),
    model: str | None = typer.Option(
        None,
        "--model",
        help="circuit package directory, model id or name (default: the proof's model id in the state dir)",
    ),
    verifier: str | None = typer.Option(None, "--verifier", help="verifier service host:port (default: config)"),
    rpc_url: str | None = typer.Option(None, "--rpc-url", help="chain JSON-RPC URL (default: config)"),
    offline: bool = typer.Option(False, "--offline", help="ask neither the verifier nor the chain (shown unchecked)"),
    config: Path | None = typer.Option(None, "--config", exists=True, dir_okay=False, help="YAML config file"),
) -> None:
    """Check a proof or a scoring job again, from its files, the verifier and the chain, and write
    what was found, with how each fact was checked, as a self-contained HTML page and JSON.
    Exit code 0: every check passed; 1: a check failed or a fact could not be checked."""
    from serve.audit.gather import audit_job, audit_proof
    from serve.audit.render import render_html, render_json

    context = _context(config, verifier, rpc_url, offline)
    if HASH_RE.match(subject):
        report = audit_proof(subject, context, proof, model)
        default_name = f"audit-{subject[:18].lower()}"
    elif Path(subject).is_dir():
        if proof is not None:
            console.print("[red]error:[/red] --proof is for a proof hash; a job directory holds its own proofs")
            raise typer.Exit(2)
        try:
            report = audit_job(Path(subject), context, model)
        except FileNotFoundError as error:
            console.print(f"[red]error:[/red] {error}")
            raise typer.Exit(2) from None
        default_name = f"audit-{Path(subject).resolve().name}"
    else:
        console.print(f"[red]error:[/red] {subject!r} is neither a proof hash (0x + 64 hex) nor a directory")
        raise typer.Exit(2)
    html_path = out or Path.cwd() / f"{default_name}.html"
    json_path = html_path.with_suffix(".json")
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(render_html(report))
    json_path.write_text(render_json(report))
    counts = ", ".join(f"{count} {status}" for status, count in report.counts().items() if count)
    colour = "green" if report.verdict == "verified" else "red"
    console.print(f"[{colour}]{report.verdict}[/{colour}]: {counts}")
    for fact in report.facts():
        if fact.status in ("failed", "unchecked"):
            console.print(f"  [red]{fact.status}[/red] {fact.label}: {fact.value} ({fact.how})")
    typer.echo(html_path)
    typer.echo(json_path)
    raise typer.Exit(0 if report.verdict == "verified" else 1)


def register(app: typer.Typer) -> None:
    app.command("audit")(audit_command)
