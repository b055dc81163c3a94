"""Builds the demo models shipped with zkserve.

Both are written with onnx.helper from seeded numpy weights, so the files are
reproducible without PyTorch or any download: ``python -m circuits.demo.build``.
Each model has a dynamic batch dimension and ships calibration data beside it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DEMO_DIR = Path(__file__).resolve().parent  # files are written beside this script
OPSET = 13
SEED = 20261130


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array.astype(np.float32), name)


def mlp(rng: np.random.Generator) -> onnx.ModelProto:
    """Tabular credit-style model: 16 features -> 8 hidden (ReLU) -> 2 class scores."""
    w1 = rng.normal(0, 0.4, (16, 8))
    b1 = rng.normal(0, 0.1, (8,))
    w2 = rng.normal(0, 0.4, (8, 2))
    b2 = rng.normal(0, 0.1, (2,))
    nodes = [
        helper.make_node("MatMul", ["features", "w1"], ["h1"]),
        helper.make_node("Add", ["h1", "b1"], ["h1b"]),
        helper.make_node("Relu", ["h1b"], ["h1r"]),
        helper.make_node("MatMul", ["h1r", "w2"], ["h2"]),
        helper.make_node("Add", ["h2", "b2"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes,
        "demo_mlp",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 2])],
        [_init("w1", w1), _init("b1", b1), _init("w2", w2), _init("b2", b2)],
    )
    return _finish(graph)


def cnn(rng: np.random.Generator) -> onnx.ModelProto:
    """Small image model: 1x8x8 -> Conv 3x3 (2 ch) -> ReLU -> Flatten -> 3 class scores."""
    conv_w = rng.normal(0, 0.4, (2, 1, 3, 3))
    conv_b = rng.normal(0, 0.1, (2,))
    fc_w = rng.normal(0, 0.2, (2 * 6 * 6, 3))
    fc_b = rng.normal(0, 0.1, (3,))
    nodes = [
        helper.make_node("Conv", ["image", "conv_w", "conv_b"], ["c1"], kernel_shape=[3, 3],
                         strides=[1, 1], pads=[0, 0, 0, 0], dilations=[1, 1]),  # EZKL wants them explicit
        helper.make_node("Relu", ["c1"], ["c1r"]),
        helper.make_node("Flatten", ["c1r"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "fc_w"], ["fc"]),
        helper.make_node("Add", ["fc", "fc_b"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "demo_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [_init("conv_w", conv_w), _init("conv_b", conv_b), _init("fc_w", fc_w), _init("fc_b", fc_b)],
    )
    return _finish(graph)


def _finish(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="zkserve-demo")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


DEMO_MODELS = {
    "demo-mlp": (mlp, (16,)),
    "demo-cnn": (cnn, (1, 8, 8)),
}


def build(out_dir: Path = DEMO_DIR, calibration_rows: int = 32) -> dict[str, Path]:
    """Writes ``NAME.onnx`` and ``NAME.calibration.npy`` for every demo model."""
    written = {}
    for index, (name, (make, row_shape)) in enumerate(DEMO_MODELS.items()):
        rng = np.random.default_rng(SEED + index)
        model_path = out_dir / f"{name}.onnx"
        onnx.save(make(rng), model_path)
        calibration = rng.uniform(-1.0, 1.0, (calibration_rows, *row_shape)).astype(np.float32)
        np.save(out_dir / f"{name}.calibration.npy", calibration)
        written[name] = model_path
    return written


if __name__ == "__main__":
    for name, path in build().items():
        print(f"{name}: {path}")
