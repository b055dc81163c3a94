"""The attestation side of a local stack, as `zkserve up` and `zkserve demo` start it.

The verifier service runs as its own process (it owns the SQLite outbox and the chain
sender, and starts the local anvil when no RPC URL is configured); the served models'
verifiers are then deployed and registered once in the attestation registry.
"""

from __future__ import annotations

import atexit
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from circuits import CircuitPackage
from serve.chain.connect import connect
from serve.chain.keys import child_env
from serve.security import INSECURE_FLAG
from serve.chain.registry import Registry
from serve.verifier.client import VerifierClient

READY_TIMEOUT_S = 120


def verifier_target(zkserve: dict) -> str:
    return f"{zkserve['verifier']['host']}:{zkserve['verifier']['port']}"


def write_resolved_config(document: dict) -> Path:
    """The child reads the same resolved settings the parent runs with."""
    path = Path(document["zkserve"]["state_dir"]) / "run" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@dataclass
class VerifierProcess:
    document: dict
    packages: list[CircuitPackage] = field(default_factory=list)
    insecure_no_auth: bool = False  # the operator's --insecure-no-auth, passed on
    process: subprocess.Popen | None = None

    @property
    def target(self) -> str:
        return verifier_target(self.document["zkserve"])

    @property
    def log_path(self) -> Path:
        return Path(self.document["zkserve"]["state_dir"]) / "run" / "verifier.log"

    def start(self) -> "VerifierProcess":
        command = [sys.executable, "-m", "serve.verifier", "--config", str(write_resolved_config(self.document))]
        for package in self.packages:
            command += ["--package", str(package.root)]
        if self.insecure_no_auth:
            command.append(INSECURE_FLAG)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                        env=child_env(with_key=True))  # the signer: the one child given the key
        atexit.register(self.stop)
        with VerifierClient.for_config(self.document["zkserve"]) as client:
            try:
                client.wait_ready(READY_TIMEOUT_S)
            except TimeoutError:
                self.stop()
                raise RuntimeError(f"the verifier service did not become ready; see {self.log_path}") from None
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # the service drains its gRPC server and stops its anvil
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None


def register_models(zkserve: dict, packages: list[CircuitPackage]) -> dict[str, dict]:
    """Deploys each package's verifier and binds it to its model id (a no-op when done before)."""
    connection = connect(zkserve, start_anvil=False)  # the verifier service runs the local chain
    try:
        registry = Registry.ensure(connection.client, Path(zkserve["state_dir"]))
        return {p.name: registry.register_model(p, Path(zkserve["state_dir"])) for p in packages}
    finally:
        connection.close()


def start_attestation(document: dict, packages: list[CircuitPackage]) -> VerifierProcess:
    verifier = VerifierProcess(document, packages).start()
    register_models(document["zkserve"], packages)
    return verifier
