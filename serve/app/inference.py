"""ONNX Runtime with dynamic batching: requests that arrive while a batch runs share the next run.

Runs inside the ingress replica on nodes without a GPU (no hop) and inside the Predictor
deployment when a GPU holds the session. No Ray here, so it is tested on its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from serve.app.runtime import create_session

INLINE_RUN_MS = 0.5  # runs faster than this may stay on the event loop...
IDLE_GAP_S = 0.0003  # ...when no run ended in the last 0.3 ms (under load requests come closer: batch them)
Observer = Callable[[float, int], None]  # (run time in ms, rows) -> None


class BatchedModel:
    """One ORT session; ``predict`` coalesces concurrent calls into runs of at most ``max_batch_size`` rows."""

    def __init__(self, onnx_path: str, use_gpu: bool = False, threads: int | None = None, max_batch_size: int = 16,
                 observe: Observer | None = None):
        self.session = create_session(onnx_path, use_gpu=use_gpu, threads=threads)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.max_batch_size = max(1, int(max_batch_size))
        self.observe = observe
        # one runner thread: ORT releases the GIL, so the event loop keeps taking requests meanwhile.
        # A run shorter than a thread hop (~0.1 ms) is cheaper inline on the loop: measured per run.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ort")
        self._last_run_ms = 0.0
        self._last_end = 0.0  # perf_counter at the end of the last run
        self._queue: list[tuple[dict[str, np.ndarray], int, asyncio.Future]] = []
        self._draining = False

    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    async def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if (not self._draining and self._last_run_ms < INLINE_RUN_MS
                and time.perf_counter() - self._last_end > IDLE_GAP_S):
            # idle and quick: run now, in this call (no task, no future; nothing waits behind it)
            return self._run([inputs])[0]
        # Busy (or slow): the runner thread takes the queue while this loop keeps accepting
        # requests, which join the next run. One session.run per batch, not per request.
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.append((inputs, len(next(iter(inputs.values()))), future))
        if not self._draining:
            self._draining = True
            loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                batch, rows = [], 0
                while self._queue and (not batch or rows + self._queue[0][1] <= self.max_batch_size):
                    item = self._queue.pop(0)
                    batch.append(item)
                    rows += item[1]
                try:
                    results = await loop.run_in_executor(self._executor, self._run, [b[0] for b in batch])
                except Exception as error:  # noqa: BLE001 - every waiting caller gets the error
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for (_, _, future), result in zip(batch, results, strict=False):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._draining = False

    def _run(self, requests: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        rows = [len(next(iter(r.values()))) for r in requests]
        feed = requests[0] if len(requests) == 1 else {name: np.concatenate([r[name] for r in requests])
                                                       for name in requests[0]}
        started = time.perf_counter()
        results = self.session.run(self.output_names, feed)
        self._last_end = time.perf_counter()
        self._last_run_ms = (self._last_end - started) * 1000
        if self.observe is not None:
            self.observe(self._last_run_ms, sum(rows))
        if len(requests) == 1:
            return [dict(zip(self.output_names, results, strict=True))]
        bounds = np.cumsum([0, *rows])
        return [{name: np.asarray(result[start:end]) for name, result in zip(self.output_names, results, strict=False)}
                for start, end in zip(bounds[:-1], bounds[1:], strict=False)]
