"""Predictor deployment: one ONNX Runtime session per replica, with dynamic batching."""

from __future__ import annotations

import time

import numpy as np
import ray
from ray import serve

from serve.app import metrics
from serve.app.models import ModelSpec
from serve.app.runtime import create_session


@serve.deployment(ray_actor_options={"num_cpus": 0})
class Predictor:
    def __init__(self, spec: ModelSpec, max_batch_size: int = 16, batch_wait_timeout_s: float = 0.0,
                 ort_threads: int | None = None):
        self.spec = spec
        self.session = create_session(spec.onnx_path, use_gpu=bool(ray.get_gpu_ids()), threads=ort_threads)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._run_batch.set_max_batch_size(max_batch_size)
        self._run_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)

    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    async def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name for one request's rows; concurrent requests share one ORT run."""
        return await self._run_batch(inputs)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0)
    async def _run_batch(self, requests: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        rows = [len(next(iter(r.values()))) for r in requests]
        feed = {name: np.concatenate([r[name] for r in requests]) for name in requests[0]}
        started = time.perf_counter()
        results = self.session.run(self.output_names, feed)
        tags = {"model": self.spec.name}
        metrics.inference_latency().observe((time.perf_counter() - started) * 1000, tags=tags)
        metrics.batch_sizes().observe(sum(rows), tags=tags)
        bounds = np.cumsum([0, *rows])
        return [
            {name: np.asarray(result[start:end]) for name, result in zip(self.output_names, results, strict=False)}
            for start, end in zip(bounds[:-1], bounds[1:], strict=False)
        ]
