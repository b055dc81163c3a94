"""BatchedModel without a server: a quick run answers in the caller's own call, slow runs
coalesce concurrent calls into one batch, every caller gets exactly its rows, and a failed run
fails each of its callers (none hangs). Plus the metrics tally of the request path."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument as OrtInvalidArgument

from serve.app import inference
from serve.app.inference import BatchedModel
from serve.app.metrics import Tally

WEIGHTS = np.arange(8, dtype=np.float32).reshape(4, 2) / 8


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory) -> str:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor("w", TensorProto.FLOAT, [4, 2], WEIGHTS.ravel().tolist())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    path = tmp_path_factory.mktemp("model") / "matmul.onnx"
    onnx.save(model, path)
    return str(path)


def rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, 4)).astype(np.float32)


def test_a_quick_run_on_an_idle_model_answers_in_the_call(onnx_path):
    seen: list[tuple[float, int]] = []
    model = BatchedModel(onnx_path, threads=1, observe=lambda ms, n: seen.append((ms, n)))
    x = rows(3, 0)

    async def one():
        answer = await model.predict({"x": x})
        assert not model._draining  # no drain task was started for it
        return answer

    answer = asyncio.run(one())
    np.testing.assert_allclose(answer["y"], x @ WEIGHTS, rtol=1e-6)
    assert [n for _, n in seen] == [3]


def test_slow_runs_coalesce_concurrent_calls_and_each_caller_gets_its_rows(onnx_path, monkeypatch):
    monkeypatch.setattr(inference, "INLINE_RUN_MS", -1.0)  # every run as if slow: through the runner thread
    batches: list[int] = []
    model = BatchedModel(onnx_path, threads=1, max_batch_size=64, observe=lambda ms, n: batches.append(n))
    inputs = [rows(1 + i % 3, i) for i in range(24)]

    async def many():
        return await asyncio.gather(*(model.predict({"x": x}) for x in inputs))

    answers = asyncio.run(many())
    for x, answer in zip(inputs, answers, strict=True):
        np.testing.assert_allclose(answer["y"], x @ WEIGHTS, rtol=1e-6)
    assert sum(batches) == sum(len(x) for x in inputs)
    assert len(batches) < len(inputs) and max(batches) > 3  # calls shared runs


def test_a_failed_run_fails_every_caller_of_its_batch(onnx_path, monkeypatch):
    monkeypatch.setattr(inference, "INLINE_RUN_MS", -1.0)
    model = BatchedModel(onnx_path, threads=1, max_batch_size=64)
    bad = np.zeros((1, 5), np.float32)  # the model takes 4 features

    async def both():
        return await asyncio.gather(model.predict({"x": bad}), model.predict({"x": bad}), return_exceptions=True)

    outcomes = asyncio.run(asyncio.wait_for(both(), 30))
    assert all(isinstance(outcome, OrtInvalidArgument) for outcome in outcomes)
    monkeypatch.setattr(inference, "INLINE_RUN_MS", 0.5)
    model._last_run_ms = 0.0
    with pytest.raises(OrtInvalidArgument):  # the inline path raises in the caller too
        asyncio.run(model.predict({"x": bad}))


def test_the_tally_loses_no_count_while_it_is_drained():
    tally = Tally(interval_s=None)
    drained: list = []
    stop = threading.Event()

    def drainer():
        while not stop.is_set():
            drained.append(tally.drain())

    def requests(n: int):
        for i in range(n):
            tally.inc(("grpc", "ModelInfer", "m", "OK"))
            tally.observe("inference_ms", (("model", "m"),), float(i))

    worker = threading.Thread(target=drainer)
    worker.start()
    senders = [threading.Thread(target=requests, args=(5000,)) for _ in range(4)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    stop.set()
    worker.join()
    drained.append(tally.drain())
    counts = sum(c[("grpc", "ModelInfer", "m", "OK")] for c, _ in drained)
    samples = sum(len(s.get(("inference_ms", (("model", "m"),)), [])) for _, s in drained)
    assert counts == 20000 and samples == 20000
