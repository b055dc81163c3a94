"""Where a prediction's time goes: sequential latency of the service's RPCs against the
plain grpcio + ONNX Runtime server of bench_serving, in one run.

    .venv/bin/python -m bench.bench_latency [--calls 200]

ServerLive is the transport and the ingress's call wrapper only (the ingress replica serves gRPC
itself, no proxy); ModelInfer(attest=none) adds the protocol adapter, the checks and ORT (in the
ingress process on CPU nodes); attest=async adds writing the queued proof job. Writes
bench/results/latency.json; `speedup` is the plain server's ModelInfer latency over the
service's (below 1: the service is slower).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference import grpc_service_pb2 as oip  # noqa: E402
from inference import grpc_service_pb2_grpc as oip_grpc  # noqa: E402

from bench.bench_serving import MODEL, request_for, service_and_plain_server  # noqa: E402
from bench.common import save  # noqa: E402


def mean_ms(call, calls: int) -> float:
    for _ in range(20):  # warm the channel and the replicas
        call()
    started = time.perf_counter()
    for _ in range(calls):
        call()
    return round((time.perf_counter() - started) / calls * 1000, 3)


def rpc_latencies(address: str, calls: int, service: bool) -> dict:
    stub = oip_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(address))
    request = request_for(np.zeros((1, 16), np.float32), "none")
    latencies = {"ModelInfer_ms": mean_ms(lambda: stub.ModelInfer(request), calls)}
    if service:  # the plain server implements ModelInfer only
        latencies["ServerLive_ms"] = mean_ms(lambda: stub.ServerLive(oip.ServerLiveRequest()), calls)
        queued = request_for(np.zeros((1, 16), np.float32), "async")
        latencies["ModelInfer_async_ms"] = mean_ms(lambda: stub.ModelInfer(queued), calls)
    return latencies


def main() -> None:
    from circuits.demo import ensure_demo_packages

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    package = ensure_demo_packages([MODEL])[MODEL]
    with service_and_plain_server(package) as (service, baseline, _):
        ours, theirs = rpc_latencies(service, args.calls, True), rpc_latencies(baseline, args.calls, False)
    ours["adapter_checks_and_ort_ms"] = round(ours["ModelInfer_ms"] - ours["ServerLive_ms"], 3)
    ours["queueing_a_proof_ms"] = round(ours["ModelInfer_async_ms"] - ours["ModelInfer_ms"], 3)
    save("latency", {"model": MODEL, "calls": args.calls, "service": ours, "plain_grpc_ort": theirs,
                     "speedup": round(theirs["ModelInfer_ms"] / ours["ModelInfer_ms"], 3)})


if __name__ == "__main__":
    main()
