"""Predictor deployment: holds a GPU's ONNX Runtime session; used only when a GPU is there
(on CPU nodes the ingress runs the same ``BatchedModel`` in its own process, no hop)."""

from __future__ import annotations

import numpy as np
import ray
from ray import serve

from serve.app import metrics
from serve.app.direct import keep_replica_servers_local
from serve.app.inference import BatchedModel
from serve.app.models import ModelSpec


@serve.deployment(ray_actor_options={"num_cpus": 0})
class Predictor:
    def __init__(self, spec: ModelSpec, max_batch_size: int = 16, ort_threads: int | None = None):
        keep_replica_servers_local()
        tags = {"model": spec.name}
        self.model = BatchedModel(spec.onnx_path, use_gpu=bool(ray.get_gpu_ids()), threads=ort_threads,
                                  max_batch_size=max_batch_size, observe=metrics.inference_observer(tags))

    def providers(self) -> list[str]:
        return self.model.providers()

    async def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return await self.model.predict(inputs)
