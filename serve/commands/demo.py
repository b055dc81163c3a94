"""`zkserve demo`: the main job end to end on the local defaults."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import typer

from circuits import Prover, decode_outputs
from circuits.demo import demo_files, ensure_demo_packages
from serve.commands.progress import console, stage_progress


def demo_command(model: str = typer.Option("demo-mlp", help="demo model to prove an inference of")) -> None:
    """Compile the demo models, run one inference and prove and verify it locally."""
    with stage_progress("compiling demo models") as on_stage:
        packages = ensure_demo_packages(on_stage=on_stage)
    package = packages[model]
    _, calibration = demo_files(model)
    row = np.load(calibration)[:1]
    session = ort.InferenceSession(str(package.onnx_path), providers=["CPUExecutionProvider"])
    (outputs, *_) = session.run(None, {package.inputs[0]["name"]: row.astype(np.float32)})
    prover = Prover(package)
    proof = prover.prove(row)
    proven = decode_outputs(package, proof)[0]
    verified = prover.verify(proof)
    console.print(f"model      {package.describe()}")
    console.print(f"output     {np.round(outputs[0], 5).tolist()}  (ONNX Runtime)")
    console.print(f"proven     {np.round(proven[0], 5).tolist()}  (from the proof's public instances)")
    console.print(f"proof hash {proof.proof_hash}")
    console.print(f"verified   {verified}")
    if not verified or np.max(np.abs(proven - outputs)) > package.tolerance:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
