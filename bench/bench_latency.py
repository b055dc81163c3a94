"""Where a prediction's time goes: sequential latency of the service's RPCs against the
plain grpcio + ONNX Runtime server of bench_serving, in one run.

    .venv/bin/python -m bench.bench_latency [--calls 400] [--rounds 20]

ServerLive is the transport and the ingress's call wrapper only (the ingress replica serves gRPC
itself, no proxy); ModelInfer(attest=none) adds the protocol adapter, the checks and ORT (in the
ingress process on CPU nodes); attest=async adds writing the queued proof job. Writes
bench/results/latency.json; `speedup` is the plain server's ModelInfer latency over the
service's (below 1: the service is slower).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference import grpc_service_pb2 as oip  # noqa: E402
from inference import grpc_service_pb2_grpc as oip_grpc  # noqa: E402

from bench.bench_serving import MODEL, request_for, service_and_plain_server  # noqa: E402
from bench.common import interleaved_ms, save  # noqa: E402


def rpc_latencies(service: str, baseline: str, count: int, rounds: int) -> dict[str, float]:
    ours = oip_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(service))
    theirs = oip_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(baseline))
    request = request_for(np.zeros((1, 16), np.float32), "none")
    queued = request_for(np.zeros((1, 16), np.float32), "async")
    measured = interleaved_ms({
        "plain": lambda: theirs.ModelInfer(request),  # the plain server implements ModelInfer only
        "ModelInfer": lambda: ours.ModelInfer(request),
        "ServerLive": lambda: ours.ServerLive(oip.ServerLiveRequest()),
        "ModelInfer_async": lambda: ours.ModelInfer(queued),
    }, count, rounds)
    return {name: round(ms, 3) for name, ms in measured.items()}


def main() -> None:
    from circuits.demo import ensure_demo_packages

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=400, help="calls of each kind, in all")
    parser.add_argument("--rounds", type=int, default=20, help="rounds the calls are interleaved in")
    args = parser.parse_args()
    package = ensure_demo_packages([MODEL])[MODEL]
    with service_and_plain_server(package) as (service, baseline, _):
        measured = rpc_latencies(service, baseline, args.calls, args.rounds)
    ours = {f"{name}_ms": ms for name, ms in measured.items() if name != "plain"}
    ours["adapter_checks_and_ort_ms"] = round(ours["ModelInfer_ms"] - ours["ServerLive_ms"], 3)
    ours["queueing_a_proof_ms"] = round(ours["ModelInfer_async_ms"] - ours["ModelInfer_ms"], 3)
    save("latency", {"model": MODEL, "calls": args.calls, "rounds": args.rounds, "service": ours,
                     "plain_grpc_ort": {"ModelInfer_ms": measured["plain"]},
                     "speedup": round(measured["plain"] / ours["ModelInfer_ms"], 3)})


if __name__ == "__main__":
    main()
