"""`zkserve up`, `zkserve predict`, `zkserve status`: run and use the serving app."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Optional

import grpc
import numpy as np
import typer

from serve.commands.progress import console
from serve.config import ConfigError, load_config

def _document(config: Optional[Path]) -> dict:
    try:
        return load_config(config)
    except ConfigError as error:
        console.print(f"[red]config:[/red] {error}")
        raise typer.Exit(2)


def _address(document: dict, address: Optional[str]) -> str:
    ingress = document["zkserve"]["ingress"]
    return address or f"{ingress['host']}:{ingress['port']}"


def up_command(config: Optional[Path] = typer.Option(None, exists=True, dir_okay=False, help="YAML config file")) -> None:
    """Start Ray (local, or $RAY_ADDRESS), deploy the app, and stay up until Ctrl-C."""
    import ray
    from ray import serve

    from serve.app import start
    from serve.commands.progress import stage_progress

    document = _document(config)
    zk = document["zkserve"]
    verifier = None
    if zk["verifier"]["enabled"]:
        # before the app, so the provers' first submissions find it listening
        from serve.app.models import resolve_models
        from serve.stack import start_attestation

        packages = [spec.load_package() for spec in resolve_models(list(zk["serving"]["models"])).values()]
        verifier = start_attestation(document, packages)
    ray.init(include_dashboard=False, log_to_driver=False)  # honours RAY_ADDRESS
    try:
        with stage_progress("deploying zkserve (compiles demo models on first run)") as on_stage:
            on_stage("deploy")
            start(document)
        console.print(f"gRPC ingress  {_address(document, None)}  "
                      "(inference.GRPCInferenceService, zkserve.v1.Attestation, grpc.health.v1.Health)")
        if verifier is not None:
            from serve.security import redact_url

            chain = redact_url(zk["chain"]["rpc_url"]) or f"anvil at {zk['chain']['anvil_host']}:{zk['chain']['anvil_port']}"
            console.print(f"verifier      {verifier.target}  (zkserve.v1.Verifier, grpc.health.v1.Health; chain: {chain}; "
                          f"metrics :{zk['verifier']['metrics_port']}/metrics)")
        console.print(f"state         {document['zkserve']['state_dir']}")
        console.print("Ctrl-C stops")
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):  # Ray replaces the default SIGINT handling
            signal.signal(signum, lambda *_: stop.set())
        while not stop.wait(1.0):
            pass
        console.print("stopping")
    finally:
        if not os.environ.get("RAY_ADDRESS"):  # a cluster we joined keeps its app
            serve.shutdown()
        ray.shutdown()
        if verifier is not None:
            verifier.stop()


def _read_inputs(path: Path, input_names: list[str]) -> dict[str, np.ndarray]:
    if path.suffix == ".npz":
        with np.load(path) as archive:
            return {name: archive[name].astype(np.float32) for name in input_names}
    if len(input_names) != 1:
        raise typer.BadParameter(f"the model takes {len(input_names)} inputs: give an .npz keyed by {', '.join(input_names)}")
    return {input_names[0]: np.load(path).astype(np.float32)}


def predict_command(
    model: str = typer.Argument(..., help="served model name, e.g. demo-mlp"),
    input: Path = typer.Option(..., "--input", exists=True, dir_okay=False, help=".npy of rows (.npz by input name)"),
    attest: Optional[str] = typer.Option(None, help="none | async | sync (default: the server's)"),
    proof_out: Optional[Path] = typer.Option(None, help="write the proof JSON here (attest=sync)"),
    address: Optional[str] = typer.Option(None, help="ingress host:port (default: from the config)"),
    config: Optional[Path] = typer.Option(None, exists=True, dir_okay=False),
) -> None:
    """Run one prediction over gRPC (Open Inference Protocol) and print outputs and proof fields."""
    from inference import grpc_service_pb2 as oip
    from inference import grpc_service_pb2_grpc as oip_grpc
    from serve.client import Prediction, infer_request

    if attest is not None and attest not in ("none", "async", "sync"):
        raise typer.BadParameter("--attest must be none, async or sync")
    stub = oip_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(_address(_document(config), address)))
    try:
        metadata = stub.ModelMetadata(oip.ModelMetadataRequest(name=model), timeout=30)
        inputs = _read_inputs(input, [t.name for t in metadata.inputs])
        for spec in metadata.inputs:
            if inputs[spec.name].ndim == len(spec.shape) - 1:
                inputs[spec.name] = inputs[spec.name][None, ...]  # one row without its batch dimension
        prediction = Prediction.from_response(stub.ModelInfer(infer_request(model, inputs, attest), timeout=600))
    except grpc.RpcError as error:
        console.print(f"[red]{error.code().name}:[/red] {error.details()}")
        raise typer.Exit(1)
    if proof_out and prediction.proof is not None:
        proof_out.write_bytes(prediction.proof)
    result = {"model": model, "outputs": {name: array.tolist() for name, array in prediction.outputs.items()},
              **prediction.parameters}
    print(json.dumps(result, indent=2))


def status_command(
    address: Optional[str] = typer.Option(None, help="ingress host:port (default: from the config)"),
    config: Optional[Path] = typer.Option(None, exists=True, dir_okay=False),
) -> None:
    """Models, replicas, ONNX Runtime providers, proof queue and proofs done/failed."""
    from zkserve.v1 import attestation_pb2 as pb
    from zkserve.v1 import attestation_pb2_grpc as pb_grpc

    target = _address(_document(config), address)
    try:
        models = pb_grpc.AttestationStub(grpc.insecure_channel(target)).ListModels(pb.ListModelsRequest(), timeout=30).models
    except grpc.RpcError as error:
        console.print(f"[red]ingress {target} not reachable:[/red] {error.code().name} {error.details()}")
        raise typer.Exit(1)
    replicas = _replica_counts()
    print(f"ingress {target}")
    for m in models:
        srs = "INSECURE dev SRS" if m.insecure_srs else "ceremony SRS"
        print(f"{m.name}  model_id {m.model_id}  ({srs}, {m.circuit_batch_size} row(s)/proof)")
        print(f"  providers  {', '.join(m.providers)}")
        print(f"  replicas   predictor {replicas.get(f'Predictor-{m.name}', '?')}, prover {replicas.get(f'Prover-{m.name}', '?')}")
        print(f"  proofs     queued {m.proofs_queued}, proving {m.proofs_proving}, done {m.proofs_done}, failed {m.proofs_failed}")


def _replica_counts() -> dict[str, int]:
    """Running replicas per deployment, when the Ray cluster is reachable from here."""
    try:
        import ray
        from ray import serve

        from serve.app import APP_NAME

        ray.init(address=os.environ.get("RAY_ADDRESS", "auto"), include_dashboard=False, log_to_driver=False)
        app = serve.status().applications.get(APP_NAME)
        if app is None:
            return {}
        return {name: sum(d.replica_states.values()) if hasattr(d, "replica_states") else 0
                for name, d in app.deployments.items()}
    except Exception:  # noqa: BLE001 - replicas are extra information; the rest still prints
        return {}


def register(app: typer.Typer) -> None:
    app.command("up")(up_command)
    app.command("predict")(predict_command)
    app.command("status")(status_command)
