"""The local chain: anvil from ``node_modules`` as a child process, state kept on disk.

``--state`` loads the file at start and writes it on exit; ``--state-interval`` also writes
it every second, so a crash of anvil (kill -9) loses at most the last second of blocks. The
verifier's reconciliation (serve/verifier/reconcile.py) sends again whatever that lost.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import requests

from circuits.solidity import node_modules
from serve.lifecycle import die_with_parent

log = logging.getLogger(__name__)


class AnvilError(RuntimeError):
    pass


def anvil_binary() -> Path:
    """The native anvil of this platform's npm package, else the npm launcher. The native one
    is preferred: the launcher is a node process that does not pass a SIGKILL on, so killing
    it would leave anvil running without its parent."""
    native = sorted(node_modules().glob("@foundry-rs/anvil-*/bin/anvil"))
    return native[0] if native else node_modules() / ".bin" / "anvil"


def rpc_chain_id(url: str, timeout: float = 1.0) -> int | None:
    """The chain id a JSON-RPC endpoint reports, or None when nothing answers."""
    try:
        reply = requests.post(
            url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=timeout
        )
        return int(reply.json()["result"], 16)
    except (requests.RequestException, ValueError, KeyError, TypeError):
        return None


class AnvilProcess:
    """One anvil child process; ``start()`` returns once it answers JSON-RPC."""

    def __init__(
        self,
        state_file: Path,
        host: str = "127.0.0.1",
        port: int = 8545,
        chain_id: int = 31337,
        log_file: Path | None = None,
        state_interval_s: int = 1,
    ):
        self.state_file = Path(state_file)
        self.host, self.port, self.chain_id = host, port, chain_id
        self.log_file = Path(log_file) if log_file else self.state_file.with_suffix(".log")
        self.state_interval_s = state_interval_s
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self, timeout_s: float = 30.0) -> AnvilProcess:
        binary = anvil_binary()
        if not binary.exists():
            raise AnvilError(f"anvil not found at {binary}; run `npm ci` in the repository root")
        if rpc_chain_id(self.url) is not None:
            raise AnvilError(f"something already answers JSON-RPC at {self.url}; pick another chain.anvil_port")
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        command = [
            str(binary),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--chain-id",
            str(self.chain_id),
            "--state",
            str(self.state_file),
            "--state-interval",
            str(self.state_interval_s),
        ]
        with open(self.log_file, "ab") as log_stream:
            # SIGTERM (anvil then dumps its state) when the process that started it dies, even by SIGKILL
            self._process = subprocess.Popen(
                command,
                stdout=log_stream,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent(),
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise AnvilError(f"anvil exited with {self._process.returncode}; see {self.log_file}")
            if rpc_chain_id(self.url, timeout=0.5) == self.chain_id:
                log.info("anvil up at %s (pid %d, state %s)", self.url, self._process.pid, self.state_file)
                return self
            time.sleep(0.1)
        self.stop()
        raise AnvilError(f"anvil did not answer at {self.url} within {timeout_s:.0f} s; see {self.log_file}")

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, so anvil writes its state file, then SIGKILL if it hangs."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def kill(self) -> None:
        """SIGKILL: the crash case, state only as of the last periodic dump."""
        if self._process is not None and self._process.poll() is None:
            os.kill(self._process.pid, signal.SIGKILL)
            self._process.wait()

    def __enter__(self) -> AnvilProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
