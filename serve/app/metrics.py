"""The app's metrics (exported by Ray's metrics agent in Prometheus format).

Created inside each replica, on first use, because metric objects belong to a process.

Per-request and per-batch figures go through ``Tally`` (a dict increment on the request path;
a thread hands the totals to Ray once a second): a Ray ``Counter.inc`` or ``Histogram.observe``
costs 10-50 us of the ingress's one event loop each, which bench/bench_serving.py measured as
a fifth of a prediction's server time. Prometheus scrapes every few seconds, so nothing is lost
but up to a second of freshness.
"""

from __future__ import annotations

import atexit
import threading
import time
from collections import Counter
from functools import cache

from ray.serve import metrics

FLUSH_INTERVAL_S = 1.0

LATENCY_BOUNDARIES_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000]
BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128]


@cache
def requests() -> metrics.Counter:
    return metrics.Counter("zkserve_requests", "requests by protocol, method, model and status code (serve.errors)",
                           tag_keys=("protocol", "method", "model", "code"))


@cache
def batch_sizes() -> metrics.Histogram:
    return metrics.Histogram("zkserve_predict_batch_rows", "rows per ONNX Runtime batch",
                             boundaries=BATCH_BOUNDARIES, tag_keys=("model",))


@cache
def inference_latency() -> metrics.Histogram:
    return metrics.Histogram("zkserve_inference_latency_ms", "ONNX Runtime run time per batch",
                             boundaries=LATENCY_BOUNDARIES_MS, tag_keys=("model",))


@cache
def proof_queue_depth() -> metrics.Gauge:
    return metrics.Gauge("zkserve_proof_queue_depth", "proofs queued or proving, all models (bounded by "
                         "zkserve.serving.max_queued_proofs)")


@cache
def proof_latency() -> metrics.Histogram:
    return metrics.Histogram("zkserve_proof_latency_ms", "EZKL witness + prove time per proof",
                             boundaries=LATENCY_BOUNDARIES_MS, tag_keys=("model",))


@cache
def proofs_failed() -> metrics.Counter:
    return metrics.Counter("zkserve_proofs_failed", "proofs that ended failed, by reason "
                           "(output_mismatch, prover_error, no_prover, lost, model_gone)", tag_keys=("model", "reason"))


@cache
def proofs_done() -> metrics.Counter:
    return metrics.Counter("zkserve_proofs_done", "proofs proven with outputs checked", tag_keys=("model",))


@cache
def proofs_refused() -> metrics.Counter:
    return metrics.Counter("zkserve_proofs_refused", "attested requests refused before proving, by status code",
                           tag_keys=("model", "code"))


def inference_observer(tags: dict):
    """The callback BatchedModel reports each ORT run to (buffered, see ``Tally``)."""
    key = tuple(sorted(tags.items()))

    def observe(run_ms: float, rows: int) -> None:
        tally().observe("inference_ms", key, run_ms)
        tally().observe("batch_rows", key, rows)

    return observe


def count_request(protocol: str, method: str, model: str, code: str) -> None:
    """One finished gRPC call or REST request (buffered, see ``Tally``)."""
    tally().inc((protocol, method, model, code))


class Tally:
    """Request-path metrics in plain dicts, handed to Ray's metric objects by a daemon thread
    every ``FLUSH_INTERVAL_S`` (and at exit). Thread-safe: the lock is held for a dict update."""

    def __init__(self, interval_s: float | None = FLUSH_INTERVAL_S):
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, str, str, str]] = Counter()
        self._samples: dict[tuple[str, tuple], list[float]] = {}
        self._gauges: dict[str, float] = {}
        if interval_s is not None:  # None: flushed by the caller only (tests)
            threading.Thread(target=self._run, args=(interval_s,), name="zkserve-metrics", daemon=True).start()
            atexit.register(self.flush)

    def inc(self, key: tuple[str, str, str, str]) -> None:
        with self._lock:
            self._requests[key] += 1

    def observe(self, histogram: str, tags: tuple, value: float) -> None:
        with self._lock:
            self._samples.setdefault((histogram, tags), []).append(value)

    def set_gauge(self, gauge: str, value: float) -> None:
        self._gauges[gauge] = value  # the last value wins; one dict store needs no lock

    def drain(self) -> tuple[Counter, dict[tuple[str, tuple], list[float]]]:
        """What was tallied since the last drain, and a fresh start: (request counts by
        (protocol, method, model, code), samples by (histogram, tags))."""
        with self._lock:
            counts, self._requests = self._requests, Counter()
            samples, self._samples = self._samples, {}
        return counts, samples

    def flush(self) -> None:
        """Everything tallied so far, to Ray's metrics (off the request path)."""
        for gauge, value in list(self._gauges.items()):
            GAUGES[gauge]().set(value)
        counts, samples = self.drain()
        for (protocol, method, model, code), n in counts.items():
            requests().inc(n, tags={"protocol": protocol, "method": method, "model": model, "code": code})
        for (histogram, tags), values in samples.items():
            target, tag_dict = HISTOGRAMS[histogram](), dict(tags)
            for value in values:
                target.observe(value, tags=tag_dict)

    def _run(self, interval_s: float) -> None:
        while True:
            time.sleep(interval_s)
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - metrics must never take the replica down
                pass


HISTOGRAMS = {"inference_ms": inference_latency, "batch_rows": batch_sizes}
GAUGES = {"proof_queue_depth": proof_queue_depth}


@cache
def tally() -> Tally:
    return Tally()


@cache
def output_mismatches() -> metrics.Counter:
    return metrics.Counter("zkserve_proven_output_mismatches",
                           "proofs whose public outputs disagree with ONNX Runtime beyond tolerance",
                           tag_keys=("model",))


@cache
def proofs_submitted() -> metrics.Counter:
    return metrics.Counter("zkserve_proofs_submitted", "proofs sent to the verifier service, by result",
                           tag_keys=("model", "result"))
