"""Chain and verifier fixtures: a real anvil per test module (random free port, state file
in a temp dir), the registry with the demo models registered, and the verifier service as
a child process (``python -m serve.verifier``) that a test can kill -9 and restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from eth_account import Account

from serve.chain.anvil import AnvilProcess
from serve.chain.keys import ANVIL_DEV_KEY
from serve.chain.registry import Registry
from serve.chain.rpc import ChainClient
from serve.ports import free_port
from serve.verifier.client import VerifierClient
from tests.e2e.serving_fixtures import serving_app  # noqa: F401 - a session fixture shared by the serving tests

REPO = Path(__file__).resolve().parents[2]
# anvil's second dev account: a key with funds but no role in the registry
OUTSIDER_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"



@pytest.fixture
def anvil_factory(tmp_path_factory):
    """Starts anvils on free ports; each is stopped at teardown."""
    started: list[AnvilProcess] = []

    def start(state_file: Path | None = None, port: int | None = None) -> AnvilProcess:
        state = state_file or tmp_path_factory.mktemp("anvil") / "state.json"
        node = AnvilProcess(state, port=port or free_port()).start()
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


@pytest.fixture(scope="module")
def module_anvil(tmp_path_factory):
    node = AnvilProcess(tmp_path_factory.mktemp("anvil") / "state.json", port=free_port()).start()
    yield node
    node.stop()


def dev_chain(url: str, key: str = ANVIL_DEV_KEY) -> ChainClient:
    return ChainClient(url, Account.from_key(key))


def setup_registry(url: str, state_dir: Path, packages) -> Registry:
    """Deploys the registry (recorded in state_dir, where the service finds it) and
    registers each package's verifier."""
    registry = Registry.ensure(dev_chain(url), state_dir)
    for package in packages:
        registry.register_model(package, state_dir)
    return registry


@dataclass
class VerifierProcess:
    """The verifier service as a child process, started and restarted on the same state."""

    state_dir: Path
    rpc_url: str
    packages: list[Path]
    env_overrides: dict = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    logs: list[Path] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def env(self) -> dict:
        env = {
            **os.environ,
            "ZKSERVE_HOME": str(self.state_dir),
            "ZKSERVE_CHAIN_RPC_URL": self.rpc_url,
            "ZKSERVE_CHAIN_PRIVATE_KEY": ANVIL_DEV_KEY,
            "ZKSERVE_VERIFIER_PORT": str(self.port),
            "ZKSERVE_VERIFIER_METRICS_PORT": str(self.metrics_port),
            "ZKSERVE_VERIFIER_ANCHOR_BATCH_SIZE": "4",
            "ZKSERVE_VERIFIER_ANCHOR_MAX_AGE_S": "0.5",
            "ZKSERVE_VERIFIER_RETRY_BASE_S": "0.1",
            "ZKSERVE_VERIFIER_RETRY_MAX_S": "1.0",
            "RAYON_NUM_THREADS": "1",
        }
        env.update(self.env_overrides)
        return env

    def start(self, **env_overrides) -> VerifierClient:
        self.env_overrides.update(env_overrides)
        log = self.state_dir / f"verifier-{len(self.logs)}.log"
        self.logs.append(log)
        command = [sys.executable, "-m", "serve.verifier"]
        for package in self.packages:
            command += ["--package", str(package)]
        with open(log, "wb") as stream:
            self.process = subprocess.Popen(command, cwd=REPO, env=self.env(), stdout=stream, stderr=subprocess.STDOUT)
        client = VerifierClient(self.target, timeout_s=30)
        try:
            client.wait_ready(60)
        except TimeoutError:
            raise RuntimeError(f"verifier did not start:\n{self.log_text()[-3000:]}") from None
        return client

    def kill9(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill9()

    def log_text(self) -> str:
        return "".join(path.read_text(errors="replace") for path in self.logs if path.exists())


@pytest.fixture
def verifier_factory(tmp_path_factory):
    started: list[VerifierProcess] = []

    def make(rpc_url: str, packages, state_dir: Path | None = None, **env) -> VerifierProcess:
        process = VerifierProcess(state_dir or tmp_path_factory.mktemp("verifier-home"), rpc_url,
                                  [p.root for p in packages], env_overrides=dict(env))
        started.append(process)
        return process

    yield make
    for process in started:
        process.stop()


@pytest.fixture(scope="session")
def mlp_proofs(mlp_prover, mlp_rows):
    """Eight distinct proofs of the demo MLP (one row each), made once per session."""
    return [mlp_prover.prove(mlp_rows[i % len(mlp_rows)][None, :]) for i in range(8)]


# ---- tampered proofs ----

def _copy(proof):
    from circuits import Proof

    return Proof.from_json(proof.to_json())


def tamper_byte(proof, index: int = 100):
    """One byte of the proof flipped."""
    bad = _copy(proof)
    bad.data["proof"][index] ^= 0x01
    return bad


def tamper_output(proof):
    """The last public instance (an output) changed by one."""
    bad = _copy(proof)
    column = bad.data["instances"][-1]
    value = int.from_bytes(bytes.fromhex(column[-1]), "little") + 1
    column[-1] = value.to_bytes(32, "little").hex()
    return bad


def relabel(proof, model_id: str):
    """Another model's proof presented as this model's."""
    bad = _copy(proof)
    bad.model_id = model_id
    return bad
