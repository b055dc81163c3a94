"""The Solidity verifier of a circuit, rendered by EZKL and compiled by solc-js offline.

`ezkl.create_evm_verifier` renders the .sol and then runs solc from `$HOME/.svm`,
downloading it when absent (which fails offline). We run it in a child process whose
HOME holds a `solc-0.8.20` shim that forwards EZKL's standard-JSON request to the
pinned solc-js, so nothing is downloaded. A child process also keeps EZKL's async
runtime out of the caller, whose interpreter it can crash at exit.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from circuits.solidity import CompiledContract, compile_file, node_modules

VERIFIER_CONTRACT = "Halo2Verifier"
_SVM_VERSION = "0.8.20"  # the solc EZKL 23 asks svm for

_SHIM = """#!/bin/sh
if [ "$1" = "--version" ]; then echo "Version: {version}+zkserve.solcjs"; exit 0; fi
exec node -e 'const s=require(process.argv[1]);let i="";process.stdin.on("data",c=>i+=c);process.stdin.on("end",()=>process.stdout.write(s.compile(i)));' "{solc}"
"""

_CHILD = """
import asyncio, sys, ezkl
async def main(vk, settings, sol, abi, srs):
    return await ezkl.create_evm_verifier(vk, settings, sol, abi, srs)
asyncio.run(main(*sys.argv[1:6]))
"""


class VerifierError(RuntimeError):
    pass


def _shim_home(root: Path) -> Path:
    solc = root / ".svm" / _SVM_VERSION / f"solc-{_SVM_VERSION}"
    solc.parent.mkdir(parents=True, exist_ok=True)
    solc.write_text(_SHIM.format(version=_SVM_VERSION, solc=node_modules() / "solc"))
    solc.chmod(0o755)
    return root


def render_verifier(vk: Path, settings: Path, srs: Path, sol_out: Path) -> Path:
    """Writes EZKL's Halo2 verifier source for this key to `sol_out`."""
    with tempfile.TemporaryDirectory(prefix="zkserve-evm-") as tmp:
        home = _shim_home(Path(tmp))
        abi_out = Path(tmp) / "verifier.abi"
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, str(vk), str(settings), str(sol_out), str(abi_out), str(srs)],
            env={"HOME": str(home), "PATH": "/usr/local/bin:/usr/bin:/bin:" + str(Path(sys.executable).parent)},
            capture_output=True, text=True, timeout=600,
        )
        # The child may crash at interpreter exit after succeeding; its files are the truth.
        rendered = sol_out.is_file() and abi_out.is_file()
    if not rendered:
        raise VerifierError(f"EZKL could not render the Solidity verifier: {done.stderr.strip()[-1500:]}")
    return sol_out


def build_verifier(vk: Path, settings: Path, srs: Path, sol_out: Path) -> CompiledContract:
    render_verifier(vk, settings, srs, sol_out)
    return compile_file(sol_out, VERIFIER_CONTRACT)
