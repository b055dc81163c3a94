"""ONNX Runtime on CUDA against CPU, through the session the Predictor builds.

Runs demo-cnn and a larger 3x224x224 conv net (built here with onnx.helper from seeded
weights) on the session that ``serve.app.runtime.create_session`` returns with and without a
GPU, checks that the GPU session really runs on ``CUDAExecutionProvider`` (read from
``session.get_providers()``, not ``get_available_providers()``), checks the two agree, and
writes ``bench/results/gpu.json`` with rows/s per batch size and the CUDA/CPU ratio.

    python bench/bench_gpu.py [--out DIR]

It needs only numpy, onnx and onnxruntime(-gpu): the GPU machine this is run on has no Ray or
EZKL, so the runtime module is loaded from its file rather than through ``serve.app``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.common import machine  # noqa: E402

BATCHES = (1, 8, 64)
WINDOW_S = 2.0  # timed window per (model, provider, batch), after warm-up


def _runtime():
    spec = importlib.util.spec_from_file_location("zkserve_runtime", REPO / "serve" / "app" / "runtime.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def large_cnn(path: Path) -> Path:
    """3x224x224 -> 3 strided conv+ReLU stages (32/64/128 channels) -> global pool -> 10 scores."""
    rng = np.random.default_rng(20261201)

    def init(name, shape, scale):
        return numpy_helper.from_array(rng.normal(0, scale, shape).astype(np.float32), name)

    channels = [3, 32, 64, 128]
    nodes, inits, previous = [], [], "image"
    for i, (cin, cout) in enumerate(zip(channels, channels[1:], strict=False)):
        inits += [init(f"w{i}", (cout, cin, 3, 3), (2 / (9 * cin)) ** 0.5), init(f"b{i}", (cout,), 0.01)]
        nodes += [helper.make_node("Conv", [previous, f"w{i}", f"b{i}"], [f"c{i}"], strides=[2, 2], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        previous = f"r{i}"
    inits += [init("wf", (128, 10), 0.1), init("bf", (10,), 0.01)]
    nodes += [helper.make_node("GlobalAveragePool", [previous], ["pooled"]),
              helper.make_node("Flatten", ["pooled"], ["flat"]),
              helper.make_node("Gemm", ["flat", "wf", "bf"], ["scores"])]
    graph = helper.make_graph(
        nodes, "large_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.save(model, path)
    return path


def _rows_per_s(session, feed: dict, rows: int) -> tuple[float, float]:
    """(rows/s, median ms per run) over a fixed window after three warm-up runs."""
    for _ in range(3):
        session.run(None, feed)
    times, started = [], time.perf_counter()
    while time.perf_counter() - started < WINDOW_S:
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t0)
    return rows * len(times) / sum(times), statistics.median(times) * 1000


def measure(runtime, name: str, onnx_path: Path) -> dict:
    cpu = runtime.create_session(str(onnx_path), use_gpu=False)
    gpu = runtime.create_session(str(onnx_path), use_gpu=True)
    providers = {"cpu": cpu.get_providers(), "gpu": gpu.get_providers()}
    on_cuda = providers["gpu"][0] == runtime.CUDA
    source = cpu.get_inputs()[0]
    row_shape = [d for d in source.shape[1:]]
    result = {"model": name, "input_row_shape": row_shape, "providers": providers, "cuda_used": on_cuda, "batches": []}
    rng = np.random.default_rng(0)
    for batch in BATCHES:
        feed = {source.name: rng.uniform(-1, 1, (batch, *row_shape)).astype(np.float32)}
        entry = {"batch": batch}
        entry["cpu_rows_per_s"], entry["cpu_ms"] = _rows_per_s(cpu, feed, batch)
        if on_cuda:
            entry["max_abs_diff"] = float(np.max(np.abs(cpu.run(None, feed)[0] - gpu.run(None, feed)[0])))
            entry["cuda_rows_per_s"], entry["cuda_ms"] = _rows_per_s(gpu, feed, batch)
            entry["speedup"] = entry["cuda_rows_per_s"] / entry["cpu_rows_per_s"]
        result["batches"].append(entry)
        print(f"{name} batch {batch}: " + ", ".join(f"{k} {v:.4g}" for k, v in entry.items()
                                                   if isinstance(v, float)), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    runtime = _runtime()
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        models = {"demo-cnn": REPO / "circuits" / "demo" / "demo-cnn.onnx",
                  "cnn-3x224x224": large_cnn(Path(tmp) / "large_cnn.onnx")}
        results = [measure(runtime, name, path) for name, path in models.items()]
    largest = [e.get("speedup") for e in results[-1]["batches"] if e["batch"] == max(BATCHES)]
    document = {
        "benchmark": "gpu",
        "what": "ONNX Runtime rows/s through serve.app.runtime.create_session, CUDA vs CPU provider",
        "onnxruntime": ort.__version__,
        "available_providers": ort.get_available_providers(),
        "models": results,
        "speedup": largest[0] if largest else None,
        "machine": machine(),
    }
    try:
        import torch  # only to name the GPU; absent is fine

        document["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        document["gpu"] = None
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps(document, indent=2))
    print(f"cuda used: {[r['cuda_used'] for r in results]}; wrote {args.out / 'gpu.json'}")


if __name__ == "__main__":
    main()
