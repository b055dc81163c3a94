"""The project's own contracts, compiled once per source version and cached as JSON."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from circuits.paths import state_paths
from circuits.solidity import REPO_ROOT, CompiledContract, compile_file, solc_version

CONTRACTS_DIR = REPO_ROOT / "contracts"


def project_contract(name: str, cache_dir: Path | None = None) -> CompiledContract:
    """``contracts/<name>.sol`` compiled, cached (default ``<state dir>/contracts``) by source
    hash and solc version: solc-js takes seconds per run."""
    cache_dir = cache_dir or state_paths().contracts
    source = CONTRACTS_DIR / f"{name}.sol"
    digest = hashlib.sha256(source.read_bytes() + solc_version().encode()).hexdigest()[:16]
    cached = Path(cache_dir) / f"{name}-{digest}.json"
    if cached.is_file():
        data = json.loads(cached.read_text())
        return CompiledContract(data["contractName"], data["abi"], data["bytecode"], data["deployedSize"])
    compiled = compile_file(source, name)
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(compiled.to_json()))
    return compiled
