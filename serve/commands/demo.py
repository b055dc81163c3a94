"""`zkserve demo`: one attested prediction, end to end on the local defaults.

Compiles the demo model (cached), starts the verifier service with its local anvil and
registers the model's verifier, deploys the Ray Serve app, asks the gRPC ingress for a
prediction with `attest=sync`, checks the proof off chain, and waits until the prover's
submission is anchored on chain and its Merkle path checks in the registry contract.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import typer

from circuits import Proof, decode_outputs, verify_proof
from circuits.demo import DEMO_NAMES, demo_files, ensure_demo_packages
from serve.commands.progress import console, stage_progress
from serve.config import ConfigError, load_config

ANCHOR_TIMEOUT_S = 180


def _rounded(values, digits: int = 5) -> list[float]:
    return [round(float(v), digits) for v in np.ravel(values)]


def _fail(message: str) -> None:
    console.print(f"[red]demo failed:[/red] {message}")
    raise typer.Exit(1)


def demo_command(
    model: str = typer.Option("demo-mlp", help=f"demo model: {', '.join(DEMO_NAMES)}"),
    config: Path | None = typer.Option(None, exists=True, dir_okay=False, help="YAML config file"),
) -> None:
    """Serve a demo model and print one attested prediction (proof verified, hash anchored on chain)."""
    import ray
    from inference import grpc_service_pb2_grpc as oip_grpc
    from ray import serve

    from serve.app import start
    from serve.chain.connect import connect
    from serve.chain.registry import Registry
    from serve.oip_client import Prediction, infer_request
    from serve.stack import start_attestation
    from serve.verifier.client import VerifierClient, status_name

    if model not in DEMO_NAMES:
        raise typer.BadParameter(f"--model must be one of {', '.join(DEMO_NAMES)}")
    try:
        document = load_config(config)
    except ConfigError as error:
        _fail(str(error))
    zk = document["zkserve"]
    zk["serving"].update(models=[model], submit_proofs=True)
    with stage_progress(f"compiling {model}") as on_stage:
        package = ensure_demo_packages([model], on_stage=on_stage)[model]

    console.print("starting the verifier service, the local chain and Ray Serve ...")
    verifier = start_attestation(document, [package])
    from serve.security import keep_ray_on_loopback

    keep_ray_on_loopback()  # a local cluster of this process only: nothing listens beyond 127.0.0.1
    ray.init(include_dashboard=False, log_to_driver=False)
    try:
        start(document)
        row = np.load(demo_files(model)[1])[:1].astype(np.float32)
        target = f"127.0.0.1:{zk['ingress']['port']}"
        stub = oip_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(target))
        try:
            response = stub.ModelInfer(infer_request(model, {package.inputs[0]["name"]: row}, attest="sync"),
                                       timeout=300)
        except grpc.RpcError as error:
            _fail(f"ModelInfer: {error.code().name} {error.details()}")
        prediction = Prediction.from_response(response)
        proof = Proof.from_json(prediction.proof)
        verified = verify_proof(package, proof)
        proven = decode_outputs(package, proof)[0]
        (output,) = prediction.outputs.values()

        with VerifierClient(verifier.target) as client:
            # the prover submits right after answering: the record may be a moment away
            record = client.wait_final(proof.proof_hash, timeout_s=ANCHOR_TIMEOUT_S, not_yet_submitted_ok=True)
        connection = connect(zk, start_anvil=False)
        try:
            registry = Registry.ensure(connection.client, Path(zk["state_dir"]))
            on_chain = record.merkle_root and registry.is_anchored(record.leaf, list(record.merkle_path),
                                                                    record.merkle_root)
        finally:
            connection.close()
    finally:
        serve.shutdown()
        ray.shutdown()
        verifier.stop()

    console.print(f"model        {package.describe()}")
    console.print(f"input        first features {_rounded(row[0][:4], 4)} ...")
    console.print(f"output       {_rounded(output[0])}  (ONNX Runtime, via gRPC ModelInfer)")
    console.print(f"proven       {_rounded(proven[0])}  (from the proof's public instances)")
    console.print(f"outputs match within tolerance: {prediction.parameters.get('proven_outputs_match')}")
    console.print(f"proof hash   {proof.proof_hash}")
    console.print(f"verified     {verified}  (EZKL, off chain, with the package's verification key)")
    console.print(f"attestation  {status_name(record)}  root {record.merkle_root}  tx {record.tx_hash}  "
                  f"block {record.block_number}")
    console.print(f"isAnchored   {bool(on_chain)}  (registry contract, Merkle path of {len(record.merkle_path)})")
    if not (verified and on_chain and prediction.parameters.get("proven_outputs_match")):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
