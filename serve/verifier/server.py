"""Wires the verifier service together: outbox, chain, sender thread, and a grpcio server
with the health and reflection services."""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from zkserve.v1 import verifier_pb2, verifier_pb2_grpc

from circuits.paths import StatePaths
from serve.chain.connect import ChainConnection, connect
from serve.chain.registry import Registry
from serve.verifier.metrics import VerifierMetrics
from serve.verifier.models import ModelCatalog
from serve.verifier.outbox import Outbox
from serve.verifier.sender import ChainSender
from serve.verifier.service import RegistryHandle, VerifierService

log = logging.getLogger(__name__)

SERVICE_NAME = verifier_pb2.DESCRIPTOR.services_by_name["Verifier"].full_name


def outbox_path(state_dir: str | Path) -> Path:
    return StatePaths(Path(state_dir)).outbox


class VerifierServer:
    def __init__(self, config: dict, package_dirs: list[Path] = (), max_workers: int = 16):
        zk = config["zkserve"]
        self.settings = zk["verifier"]
        state_dir = Path(zk["state_dir"])
        self.outbox = Outbox(outbox_path(state_dir))
        self.catalog = ModelCatalog(state_dir, list(package_dirs))
        self.connection: ChainConnection = connect(zk)
        chain = self.connection.client
        self.registry = RegistryHandle(lambda: Registry.ensure(chain, state_dir))
        self.sender = ChainSender(self.outbox, chain, self.registry, self.settings)
        self.health = health.HealthServicer()
        self.grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="verifier-rpc"))
        self.metrics = VerifierMetrics(self.outbox)
        verifier_pb2_grpc.add_VerifierServicer_to_server(
            VerifierService(self.catalog, self.outbox, self.registry, metrics=self.metrics), self.grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.grpc)
        address = f"{self.settings['host']}:{self.settings['port']}"
        self.port = self.grpc.add_insecure_port(address)
        if not self.port:
            raise OSError(f"cannot listen on {address} (in use?); set verifier.port")
        self.address = f"{self.settings['host']}:{self.port}"

    def start(self) -> VerifierServer:
        try:
            self.registry()  # deploy/locate the registry now when the chain is up; later otherwise
        except Exception as error:  # noqa: BLE001 - the chain may be down; the sender retries
            log.warning("registry not resolved at start (%s); will retry", type(error).__name__)
        self.grpc.start()
        if self.settings.get("metrics_port"):
            self.metrics.serve(self.settings["host"], int(self.settings["metrics_port"]))
        self.sender.start()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("verifier listening on %s (outbox %s, metrics port %s)", self.address, self.outbox.path,
                 self.settings.get("metrics_port"))
        return self

    def stop(self, grace_s: float = 2.0) -> None:
        self.health.enter_graceful_shutdown()
        self.grpc.stop(grace_s).wait()
        self.sender.stop()
        self.outbox.close()
        self.connection.close()


def run_verifier(config: dict, package_dirs: list[Path] = ()) -> None:
    """Runs until SIGINT/SIGTERM."""
    server = VerifierServer(config, package_dirs).start()
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    print(f"verifier listening on {server.address}", flush=True)
    done.wait()
    server.stop()
