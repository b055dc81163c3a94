"""The attestation side of a local stack, as `zkserve up` and `zkserve demo` start it.

The verifier service runs as its own process (it owns the SQLite outbox and the chain
sender, and starts the local anvil when no RPC URL is configured); the served models'
verifiers are then deployed and registered once in the attestation registry.

The child dies with its parent: the kernel sends it SIGTERM when this process exits, even by
SIGKILL (``die_with_parent``), and it also watches its parent itself (``--parent-pid``); its
anvil does the same with it. Every port is checked before anything starts, so a service
someone else started is never adopted.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from circuits import CircuitPackage
from serve.chain.connect import connect
from serve.chain.keys import child_env
from serve.chain.registry import Registry
from serve.lifecycle import PortClaim, check_ports_free, die_with_parent
from serve.security import INSECURE_FLAG
from serve.settings import Settings, as_settings
from serve.verifier.client import VerifierClient

READY_TIMEOUT_S = 120
STOP_TIMEOUT_S = 6.0  # the service drains gRPC for 2 s and stops its anvil; then it is killed


def verifier_port_claims(settings: Settings) -> list[PortClaim]:
    """The ports the verifier service (and the local chain it starts) will listen on."""
    verifier, chain = settings.verifier, settings.chain
    claims = [PortClaim("verifier.port", verifier.host, verifier.port)]
    if verifier.metrics_port:
        claims.append(PortClaim("verifier.metrics_port", verifier.host, verifier.metrics_port))
    if chain.local:
        claims.append(PortClaim("chain.anvil_port", chain.anvil_host, chain.anvil_port))
    return claims


def write_resolved_config(settings: Settings) -> Path:
    """The child reads the same resolved settings the parent runs with."""
    path = settings.paths.resolved_config
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(settings.document(), sort_keys=False))
    return path


@dataclass
class VerifierProcess:
    settings: Settings
    packages: list[CircuitPackage] = field(default_factory=list)
    insecure_no_auth: bool = False  # the operator's --insecure-no-auth, passed on
    process: subprocess.Popen | None = None

    @property
    def target(self) -> str:
        return self.settings.verifier_target

    @property
    def log_path(self) -> Path:
        return self.settings.paths.verifier_log

    def start(self) -> VerifierProcess:
        check_ports_free(verifier_port_claims(self.settings))
        command = [sys.executable, "-m", "serve.verifier", "--config", str(write_resolved_config(self.settings)),
                   "--parent-pid", str(os.getpid())]
        for package in self.packages:
            command += ["--package", str(package.root)]
        if self.insecure_no_auth:
            command.append(INSECURE_FLAG)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # the signer: the one child given the key
        env = {**child_env(with_key=True), "ZKSERVE_HOME": str(self.settings.paths.root)}
        with open(self.log_path, "ab") as log:
            # its own session: a terminal's Ctrl-C reaches `up`, which stops the child in order
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True, env=env, preexec_fn=die_with_parent())
        with VerifierClient.for_config(self.settings.zkserve_section()) as client:
            try:
                self._wait_ready(client)
            except (TimeoutError, RuntimeError):
                self.stop()
                raise
        return self

    def _wait_ready(self, client: VerifierClient) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the verifier service exited with {self.process.returncode}; see {self.log_path}")
            try:
                client.wait_ready(1.0)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the verifier service did not become ready; see {self.log_path}") from None

    def terminate(self) -> None:
        """Asks the service to stop (it drains gRPC and stops its anvil); returns at once."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        if self.process is None:
            return
        self.terminate()
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()  # its anvil gets SIGTERM from the kernel (die_with_parent)
            self.process.wait()
        self.process = None


def register_models(settings: Settings, packages: list[CircuitPackage]) -> dict[str, dict]:
    """Deploys each package's verifier and binds it to its model id (a no-op when done before)."""
    zkserve = settings.zkserve_section()
    connection = connect(zkserve, start_anvil=False)  # the verifier service runs the local chain
    try:
        registry = Registry.ensure(connection.client, settings.paths.root)
        return {p.name: registry.register_model(p, settings.paths.root) for p in packages}
    finally:
        connection.close()


def start_attestation(settings: Settings | dict, packages: list[CircuitPackage],
                      insecure_no_auth: bool = False) -> VerifierProcess:
    settings = as_settings(settings)
    verifier = VerifierProcess(settings, packages, insecure_no_auth).start()
    try:
        register_models(settings, packages)
    except BaseException:
        verifier.stop()
        raise
    return verifier
