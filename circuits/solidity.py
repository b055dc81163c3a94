"""Compiles Solidity with the pinned solc-js from ``node_modules`` (no network, no svm).

EZKL's ``create_evm_verifier`` downloads a native solc when none is cached, which fails
offline; zkserve lets EZKL render the .sol and compiles it here instead. The same
function builds the project's own contracts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
EVM_VERSION = "cancun"  # anvil's default hardfork; verifiers need the BN254 precompiles only

# solc-js exposes compile(stdin JSON) -> JSON; its own CLI has no --standard-json on stdin.
_NODE_COMPILE = """
const solc = require(process.argv[1]);
let input = '';
process.stdin.on('data', (chunk) => { input += chunk; });
process.stdin.on('end', () => { process.stdout.write(solc.compile(input)); });
"""


class SolidityError(RuntimeError):
    """solc rejected a source, or the toolchain is missing."""


@dataclass(frozen=True)
class CompiledContract:
    name: str
    abi: list
    bytecode: str  # creation code, 0x-prefixed
    deployed_size: int  # runtime code bytes; EIP-170 caps it at 24,576

    def to_json(self) -> dict:
        return {
            "contractName": self.name,
            "abi": self.abi,
            "bytecode": self.bytecode,
            "deployedSize": self.deployed_size,
        }


def node_modules() -> Path:
    """The npm tree holding solc and anvil: ``$ZKSERVE_NODE_MODULES`` or the repo's own."""
    return Path(os.environ.get("ZKSERVE_NODE_MODULES", REPO_ROOT / "node_modules"))


def solc_version() -> str:
    return json.loads((node_modules() / "solc" / "package.json").read_text())["version"]


def compile_sources(sources: dict[str, str], optimizer_runs: int | None = 200) -> dict[str, CompiledContract]:
    """Compiles ``{file name: source}`` and returns every contract by name."""
    solc_dir = node_modules() / "solc"
    node = shutil.which("node")
    if node is None or not solc_dir.is_dir():
        raise SolidityError(f"solc-js not found (node={node}, {solc_dir}); run `npm ci` in {REPO_ROOT}")
    request = {
        "language": "Solidity",
        "sources": {name: {"content": text} for name, text in sources.items()},
        "settings": {
            "evmVersion": EVM_VERSION,
            "optimizer": {"enabled": optimizer_runs is not None, "runs": optimizer_runs or 200},
            "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
        },
    }
    done = subprocess.run(
        [node, "-e", _NODE_COMPILE, str(solc_dir)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SolidityError(f"solc-js crashed: {done.stderr.strip()[-2000:]}")
    output = json.loads(done.stdout)
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise SolidityError("; ".join(e.get("formattedMessage", e.get("message", "")).strip() for e in errors))
    contracts = {}
    for per_file in output.get("contracts", {}).values():
        for name, artefact in per_file.items():
            runtime = artefact["evm"]["deployedBytecode"]["object"]
            contracts[name] = CompiledContract(
                name=name,
                abi=artefact["abi"],
                bytecode="0x" + artefact["evm"]["bytecode"]["object"],
                deployed_size=len(runtime) // 2,
            )
    return contracts


def compile_file(path: Path, contract: str, optimizer_runs: int | None = 200) -> CompiledContract:
    compiled = compile_sources({path.name: path.read_text()}, optimizer_runs)
    if contract not in compiled:
        raise SolidityError(f"{path} has no contract {contract!r} (found: {', '.join(compiled)})")
    return compiled[contract]
