"""Serving benchmark: the zkserve Ray Serve app against plain baselines, in one run.

- predictions/s over gRPC with attest=none vs a plain grpcio + ONNX Runtime server
  (written below, same Open Inference Protocol stubs, same ORT thread count);
- proofs/s of the service (attest=sync) vs calling circuits.Prover in a loop;
each at 1, 8 and 32 concurrent clients (threads, one channel each). Prints a table and
writes bench/results/serving.json; `speedup` is service / baseline.

usage: .venv/bin/python bench/bench_serving.py [--seconds 4]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from inference import grpc_service_pb2 as oip  # noqa: E402
from inference import grpc_service_pb2_grpc as oip_grpc  # noqa: E402

from bench.common import save  # noqa: E402
from serve.ports import free_port  # noqa: E402

MODEL, INPUT = "demo-mlp", "features"
CONCURRENCY = (1, 8, 32)


# --- the baseline server: grpcio + ONNX Runtime, nothing else --------------------------------
class PlainInferenceServer(oip_grpc.GRPCInferenceServiceServicer):
    def __init__(self, onnx_path: str):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])

    def ServerReady(self, request, context):
        return oip.ServerReadyResponse(ready=True)

    def ModelInfer(self, request, context):
        tensor = request.inputs[0]
        rows = np.frombuffer(request.raw_input_contents[0], dtype=np.float32).reshape(tensor.shape)
        (scores,) = self.session.run(None, {tensor.name: rows})
        response = oip.ModelInferResponse(model_name=request.model_name, id=request.id)
        response.outputs.add(name="scores", datatype="FP32", shape=list(scores.shape))
        response.raw_output_contents.append(scores.astype(np.float32).tobytes())
        return response


def serve_plain(onnx_path: str, port: int) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    oip_grpc.add_GRPCInferenceServiceServicer_to_server(PlainInferenceServer(onnx_path), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


# --- load generation ----------------------------------------------------------------------
def request_for(rows: np.ndarray, attest: str) -> oip.ModelInferRequest:
    request = oip.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name=INPUT, datatype="FP32", shape=list(rows.shape))
    request.raw_input_contents.append(rows.tobytes())
    request.parameters["attest"].string_param = attest
    return request


def closed_loop(address: str, clients: int, seconds: float, attest: str) -> float:
    """Completed requests per second with `clients` clients each sending back to back."""
    rng = np.random.default_rng(0)
    requests = [request_for(rng.uniform(-1, 1, (1, 16)).astype(np.float32), attest) for _ in range(64)]
    done = [0] * clients
    start_gate = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client(index: int) -> None:
        stub = oip_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(address))
        stub.ModelInfer(requests[0], timeout=600)  # connect before the clock starts
        start_gate.wait()
        n = 0
        while time.perf_counter() < stop_at[0]:
            stub.ModelInfer(requests[n % len(requests)], timeout=600)
            if time.perf_counter() <= stop_at[0]:
                done[index] += 1
            n += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    stop_at[0] = time.perf_counter() + 3600
    start_gate.wait()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    for thread in threads:
        thread.join()
    return sum(done) / seconds


def prover_loop(package, seconds: float) -> float:
    from circuits import Prover

    prover = Prover(package)
    rows = np.random.default_rng(1).uniform(-1, 1, (1, 16)).astype(np.float32)
    prover.prove(rows)  # warm the page cache, as the service's replicas are warm
    began, count = time.perf_counter(), 0
    while time.perf_counter() - began < seconds:
        prover.prove(rows)
        count += 1
    return count / (time.perf_counter() - began)


def wait_ready(address: str, timeout_s: float = 300) -> None:
    stub = oip_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(address))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if stub.ServerReady(oip.ServerReadyRequest(), timeout=5).ready:
                return
        except grpc.RpcError:
            time.sleep(0.5)
    raise TimeoutError(address)



@contextlib.contextmanager
def service_and_plain_server(package):
    """The zkserve app serving MODEL and the plain baseline server, both ready; yields their
    addresses and the baseline's process (a caller may stop it early to free its core)."""
    import ray
    from ray import serve

    from serve.app import start
    from serve.config import load_config

    plain_port = free_port()
    plain = multiprocessing.get_context("spawn").Process(target=serve_plain, args=(str(package.onnx_path), plain_port),
                                                         daemon=True)
    plain.start()
    document = load_config()
    document["zkserve"]["state_dir"] = tempfile.mkdtemp(prefix="zkserve-bench-")
    document["zkserve"]["ingress"].update(port=free_port(), http_port=free_port())
    # proving speed of the service against circuits.Prover: no verifier round trip in either
    document["zkserve"]["serving"].update(models=[MODEL], submit_proofs=False)
    ray.init(include_dashboard=False, log_to_driver=False)
    try:
        start(document)
        service, baseline = f"127.0.0.1:{document['zkserve']['ingress']['port']}", f"127.0.0.1:{plain_port}"
        wait_ready(service)
        wait_ready(baseline)
        yield service, baseline, plain
    finally:
        serve.shutdown()
        ray.shutdown()
        if plain.is_alive():
            plain.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="measuring window per point")
    parser.add_argument("--proof-seconds", type=float, default=15.0)
    args = parser.parse_args()

    from circuits.demo import ensure_demo_packages

    package = ensure_demo_packages([MODEL])[MODEL]
    results: dict = {"model": MODEL, "seconds_per_point": args.seconds, "proof_seconds_per_point": args.proof_seconds,
                     "predictions_per_s": {}, "proofs_per_s": {}}

    with service_and_plain_server(package) as (service, baseline, plain):
        for clients in CONCURRENCY:
            ours = closed_loop(service, clients, args.seconds, "none")
            theirs = closed_loop(baseline, clients, args.seconds, "none")
            results["predictions_per_s"][str(clients)] = {"service": ours, "plain_grpc_ort": theirs, "speedup": ours / theirs}
            print(f"predictions  clients={clients:>2}  service {ours:8.1f}/s  plain grpcio+ORT {theirs:8.1f}/s  speedup {ours / theirs:.2f}")
        plain.terminate()
        loop_rate = prover_loop(package, args.proof_seconds)
        for clients in CONCURRENCY:
            ours = closed_loop(service, clients, args.proof_seconds, "sync")
            results["proofs_per_s"][str(clients)] = {"service": ours, "prover_loop": loop_rate, "speedup": ours / loop_rate}
            print(f"proofs       clients={clients:>2}  service {ours:8.2f}/s  Prover loop {loop_rate:8.2f}/s  speedup {ours / loop_rate:.2f}")
    results["speedup"] = {kind: {clients: point["speedup"] for clients, point in results[kind].items()}
                          for kind in ("predictions_per_s", "proofs_per_s")}
    save("serving", results)


if __name__ == "__main__":
    main()
