"""The app's metrics (exported by Ray's metrics agent in Prometheus format).

Created inside each replica, on first use, because metric objects belong to a process.
"""

from __future__ import annotations

from functools import cache

from ray.serve import metrics

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
    """The callback BatchedModel reports each ORT run to."""

    def observe(run_ms: float, rows: int) -> None:
        inference_latency().observe(run_ms, tags=tags)
        batch_sizes().observe(rows, tags=tags)

    return observe


@cache
def output_mismatches() -> metrics.Counter:
    return metrics.Counter("zkserve_proven_output_mismatches",
                           "proofs whose public outputs disagree with ONNX Runtime beyond tolerance",
                           tag_keys=("model",))


@cache
def proofs_submitted() -> metrics.Counter:
    return metrics.Counter("zkserve_proofs_submitted", "proofs sent to the verifier service, by result",
                           tag_keys=("model", "result"))
