"""Fixtures that start the real zkserve Ray Serve app once per test session.

Imported by tests/e2e/conftest.py (``from tests.e2e.serving_fixtures import *``) or by a
test module directly. The app listens on free loopback ports; proofs go to a fresh
state directory so counters start at zero.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from inference import grpc_service_pb2 as oip
from inference import grpc_service_pb2_grpc as oip_grpc
from zkserve.v1 import attestation_pb2_grpc as attestation_grpc

from serve.ports import free_port

READY_TIMEOUT_S = 240



@dataclass
class ServingApp:
    address: str  # host:port of the gRPC ingress
    document: dict  # the resolved config document the app was started from
    state_dir: Path

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address)

    def inference(self, channel: grpc.Channel | None = None) -> oip_grpc.GRPCInferenceServiceStub:
        return oip_grpc.GRPCInferenceServiceStub(channel or self.channel())

    def attestation(self, channel: grpc.Channel | None = None) -> attestation_grpc.AttestationStub:
        return attestation_grpc.AttestationStub(channel or self.channel())


def serving_config(state_dir: Path, grpc_port: int, http_port: int, **serving) -> dict:
    from serve.config import load_config

    document = load_config(environ={})
    document["zkserve"]["state_dir"] = str(state_dir)
    document["zkserve"]["ingress"].update(port=grpc_port, http_port=http_port)
    document["zkserve"]["serving"].update(serving)
    return document


def wait_until_ready(address: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    stub = oip_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(address))
    while True:
        try:
            if stub.ServerReady(oip.ServerReadyRequest(), timeout=5).ready:
                return
        except grpc.RpcError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"zkserve ingress at {address} not ready after {timeout_s}s")
        time.sleep(0.5)


_running: ServingApp | None = None
SHARED_BATCH_MODEL = "mlp-shared4"


def shared_batch_package():
    """The demo MLP compiled to prove 4 rows per proof, served as `mlp-shared4`."""
    from circuits import CompileOptions, compile_model
    from circuits.demo import DEMO_INPUT_RANGE, demo_files

    model, calibration = demo_files("demo-mlp")
    options = CompileOptions(batch=4, input_range=DEMO_INPUT_RANGE)
    return compile_model(model, SHARED_BATCH_MODEL, options, calibration=calibration)


def _shutdown() -> None:
    import ray
    from ray import serve

    global _running
    _running = None
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="session")
def serving_app(request, tmp_path_factory, demo_packages) -> ServingApp:
    """The whole app (both demo models) on Ray Serve, started once per session even when
    several test modules import this fixture, and shut down when the session ends."""
    import ray

    from serve.app import start

    global _running
    if _running is None:
        state_dir = tmp_path_factory.mktemp("serving-state")
        grpc_port, http_port = free_port(), free_port()
        # the serving app alone: proof submission to the verifier is covered by the demo test.
        # A third model compiled at batch 4 has its concurrent requests share one proof.
        document = serving_config(state_dir, grpc_port, http_port, default_attest="none", prover_replicas=1,
                                  submit_proofs=False, proof_batching="shared", proof_batch_wait_timeout_s=2.0,
                                  models=["demo-mlp", "demo-cnn", str(shared_batch_package().root)])
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
        request.config.add_cleanup(_shutdown)
        start(document)
        address = f"127.0.0.1:{grpc_port}"
        wait_until_ready(address)
        _running = ServingApp(address, document, state_dir)
    return _running
