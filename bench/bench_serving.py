"""Serving benchmark: the zkserve Ray Serve app against plain baselines, in one run.

- predictions/s over gRPC with attest=none vs a plain grpcio + ONNX Runtime server
  (written below, same Open Inference Protocol stubs, same ORT thread count), at 1, 8, 32 clients;
- the response latency of attest=async vs attest=none (one client, back to back);
- proofs/s of the service vs calling circuits.Prover in a loop: attest=sync at 1, 8, 32 clients,
  and a burst of attest=async requests from 32 clients, timed until every proof is finished.
Clients are threads, one channel each. Prints a table and writes bench/results/serving.json;
each `ratio` is service / baseline (for latency: async / none).

Side by side means interleaved: on a shared 2-core VM the same loop runs 20-30% faster or
slower from one minute to the next, more than the differences measured. So each prediction
point alternates short windows of the service and the baseline (order flipped every round),
latency alternates rounds of none and async calls (the proofs queued by async rounds run in
the background during both), each sync proof point alternates service windows with windows of
the bare loop (which never run at the same time), and the async burst (two minutes) is
compared with the mean of every loop window of the proof phase (its bracketing pair's ratio
is kept in the JSON too).

usage: .venv/bin/python bench/bench_serving.py [--seconds 4] [--proof-seconds 15] [--burst 10]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import multiprocessing
import os
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

from bench.common import interleaved_ms, save  # noqa: E402
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
        stub.ServerReady(oip.ServerReadyRequest(), timeout=600)  # connect before the clock starts
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


class ProverLoop:
    """The bare circuits.Prover loop, in its own process at the service's prover priority (see
    serve/app/cpu.py): on a shared machine the ratio then measures the service, not the scheduler.
    The process and its loaded Prover live across windows, so each window is proving only."""

    def __init__(self, package):
        self._pool = multiprocessing.get_context("spawn").Pool(1, initializer=_load_prover,
                                                               initargs=(str(package.root),))
        self.windows: list[float] = []

    def rate(self, seconds: float) -> float:
        """Proofs/s over one window of about ``seconds``."""
        rate = self._pool.apply(_prove_for, (seconds,))
        self.windows.append(rate)
        return rate

    def close(self) -> None:
        self._pool.terminate()


_PROVER = None


def _load_prover(package_root: str) -> None:
    global _PROVER
    from circuits import CircuitPackage, Prover
    from serve.app.cpu import run_when_idle

    run_when_idle()
    _PROVER = Prover(CircuitPackage.load(package_root))
    _PROVER.prove(_ROWS)  # warm the page cache, as the service's replicas are warm


_ROWS = np.random.default_rng(1).uniform(-1, 1, (1, 16)).astype(np.float32)


def _prove_for(seconds: float) -> float:
    began, count = time.perf_counter(), 0
    while time.perf_counter() - began < seconds:
        _PROVER.prove(_ROWS)
        count += 1
    return count / (time.perf_counter() - began)


def bracketed(loop: ProverLoop, seconds: float, measure) -> tuple[float, float]:
    """``measure()`` between two bare-loop windows; returns (its result, the loop's mean rate)."""
    before = loop.rate(seconds)
    result = measure()
    after = loop.rate(seconds)
    return result, (before + after) / 2


def alternating(loop: ProverLoop, loop_seconds: float, measure, rounds: int) -> tuple[float, float]:
    """``rounds`` service windows (``measure()``, proofs/s), each after a bare-loop window, and
    one loop window to close; returns the mean of each side."""
    ours, theirs = [], []
    for _ in range(rounds):
        theirs.append(loop.rate(loop_seconds))
        ours.append(measure())
    theirs.append(loop.rate(loop_seconds))
    return sum(ours) / len(ours), sum(theirs) / len(theirs)


class CpuMeter:
    """Where a window's CPU went: the machine's busy fraction (/proc/stat; 1.0 = every core), the
    cores one server process used, and its busiest thread's share (an event loop or a GIL-bound
    server that saturates shows as 1.0 while the machine still has idle time)."""

    def __init__(self, pid: int):
        import psutil

        self.process = psutil.Process(pid)

    @staticmethod
    def _machine() -> list[int]:
        with open("/proc/stat") as stat:
            return [int(field) for field in stat.readline().split()[1:]]

    def _threads(self) -> dict[int, float]:
        return {t.id: t.user_time + t.system_time for t in self.process.threads()}

    def measure(self, work):
        """Runs ``work()``; returns its result and the CPU figures of the window."""
        machine, threads, began = self._machine(), self._threads(), time.perf_counter()
        result = work()
        wall = time.perf_counter() - began
        machine_after, threads_after = self._machine(), self._threads()
        spent = [after - before for before, after in zip(machine, machine_after, strict=True)]
        idle = spent[3] + spent[4]  # idle + iowait
        used = {tid: t - threads.get(tid, 0.0) for tid, t in threads_after.items()}
        return result, {"machine_busy": 1 - idle / max(1, sum(spent)), "server_cores": sum(used.values()) / wall,
                        "busiest_thread_cores": max(used.values(), default=0.0) / wall}


def _mean(figures: list[dict]) -> dict:
    return {key: sum(f[key] for f in figures) / len(figures) for key in figures[0]} if figures else {}


def interleaved(service: str, baseline: str, clients: int, seconds: float, rounds: int,
                meters: dict[str, CpuMeter] | None = None) -> tuple[float, float, dict]:
    """Predictions/s of the service and the baseline, each over ``seconds`` in total, measured in
    ``rounds`` alternating windows (the order flipped every round); with ``meters`` (by address)
    also the mean CPU figures of each side's windows."""
    ours = theirs = 0.0
    cpu: dict[str, list[dict]] = {service: [], baseline: []}
    for round_ in range(rounds):
        order = (service, baseline) if round_ % 2 == 0 else (baseline, service)
        for address in order:
            window = lambda a=address: closed_loop(a, clients, seconds / rounds, "none")  # noqa: E731
            if meters and address in meters:
                rate, figures = meters[address].measure(window)
                cpu[address].append(figures)
            else:
                rate = window()
            if address == service:
                ours += rate / rounds
            else:
                theirs += rate / rounds
    return ours, theirs, {"service": _mean(cpu[service]), "plain_grpc_ort": _mean(cpu[baseline])}


def ingress_pid() -> int:
    """The process of the app's Ingress replica (it serves the gRPC port itself)."""
    import psutil

    for process in psutil.process_iter(["cmdline"]):
        if "ServeReplica:zkserve:Ingress" in " ".join(process.info["cmdline"] or ()):
            return process.pid
    raise RuntimeError("no Ingress replica process found")


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
    ray.init(include_dashboard=False, log_to_driver=False)  # all cores: the service sizes itself
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


def sequential_latency_ms(address: str, calls: int, rounds: int = 20) -> dict[str, float]:
    """Mean latency of back-to-back calls from one client, attest=none and attest=async in
    alternating rounds of calls // rounds each, both warmed first (the proofs are not waited for)."""
    stub = oip_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(address))
    rng = np.random.default_rng(2)
    requests = {attest: itertools.cycle([request_for(rng.uniform(-1, 1, (1, 16)).astype(np.float32), attest)
                                         for _ in range(max(1, calls // rounds))]) for attest in ("none", "async")}
    return interleaved_ms({attest: lambda r=requests[attest]: stub.ModelInfer(next(r), timeout=60)
                           for attest in ("none", "async")}, calls, rounds)


def proof_counts(address: str) -> tuple[int, int]:
    from zkserve.v1 import attestation_pb2 as pb
    from zkserve.v1 import attestation_pb2_grpc as pb_grpc

    stub = pb_grpc.AttestationStub(grpc.insecure_channel(address))
    (model,) = [m for m in stub.ListModels(pb.ListModelsRequest(), timeout=30).models if m.name == MODEL]
    return model.proofs_queued + model.proofs_proving, model.proofs_done + model.proofs_failed


def wait_drained(address: str, timeout_s: float = 1800) -> None:
    deadline = time.monotonic() + timeout_s
    while proof_counts(address)[0] and time.monotonic() < deadline:
        time.sleep(0.5)


def async_burst(address: str, clients: int, per_client: int) -> dict:
    """clients x per_client attest=async requests as fast as they go; then the time until every
    proof is finished. Returns accept time, drain time and proofs/s over the whole burst."""
    wait_drained(address)
    _, finished_before = proof_counts(address)
    total = clients * per_client
    rng = np.random.default_rng(3)
    requests = [request_for(rng.uniform(-1, 1, (1, 16)).astype(np.float32), "async") for _ in range(total)]

    def client(index: int) -> int:
        stub = oip_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(address))
        for n in range(per_client):
            stub.ModelInfer(requests[index * per_client + n], timeout=600)
        return per_client

    began = time.perf_counter()
    with futures.ThreadPoolExecutor(clients) as pool:
        accepted = sum(pool.map(client, range(clients)))
    accepted_s = time.perf_counter() - began
    while proof_counts(address)[1] - finished_before < total:
        time.sleep(0.2)
    drained_s = time.perf_counter() - began
    return {"requests": total, "accepted": accepted, "accepted_in_s": accepted_s, "all_proven_in_s": drained_s,
            "proofs_per_s": total / drained_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="measuring time per point and side")
    parser.add_argument("--rounds", type=int, default=6, help="alternating windows per prediction point")
    parser.add_argument("--proof-seconds", type=float, default=10.0, help="each service window of a proof point")
    parser.add_argument("--proof-rounds", type=int, default=3, help="service windows per proof point")
    parser.add_argument("--loop-seconds", type=float, default=8.0, help="each bare-loop window between them")
    parser.add_argument("--latency-calls", type=int, default=400, help="calls per attest mode")
    parser.add_argument("--burst", type=int, default=10, help="async requests per client in the burst (32 clients)")
    args = parser.parse_args()

    from circuits.demo import ensure_demo_packages

    package = ensure_demo_packages([MODEL])[MODEL]
    results: dict = {"model": MODEL, "seconds_per_point": args.seconds, "rounds": args.rounds,
                     "proof_seconds_per_window": args.proof_seconds, "proof_rounds": args.proof_rounds,
                     "loop_seconds_per_window": args.loop_seconds,
                     "load_before": os.getloadavg(), "predictions_per_s": {}, "latency_ms": {}, "proofs_per_s": {}}

    with service_and_plain_server(package) as (service, baseline, plain):
        meters = {service: CpuMeter(ingress_pid()), baseline: CpuMeter(plain.pid)}
        for clients in CONCURRENCY:
            closed_loop(service, clients, 1.0, "none")  # warm both sides at this concurrency
            closed_loop(baseline, clients, 1.0, "none")
            ours, theirs, cpu = interleaved(service, baseline, clients, args.seconds, args.rounds, meters)
            results["predictions_per_s"][str(clients)] = {"service": ours, "plain_grpc_ort": theirs,
                                                          "ratio": ours / theirs, "cpu": cpu}
            print(f"predictions  clients={clients:>2}  service {ours:8.1f}/s  plain grpcio+ORT {theirs:8.1f}/s  "
                  f"ratio {ours / theirs:.2f}  (busiest server thread {cpu['service']['busiest_thread_cores']:.2f} "
                  f"vs {cpu['plain_grpc_ort']['busiest_thread_cores']:.2f} cores, machine busy "
                  f"{cpu['service']['machine_busy']:.0%} vs {cpu['plain_grpc_ort']['machine_busy']:.0%})")
        plain.terminate()
        plain.join()
        latency = sequential_latency_ms(service, args.latency_calls)
        none_ms, async_ms = latency["none"], latency["async"]
        results["latency_ms"] = {"attest_none": none_ms, "attest_async": async_ms, "ratio": async_ms / none_ms}
        print(f"latency      attest=none {none_ms:.2f} ms  attest=async {async_ms:.2f} ms  "
              f"ratio {async_ms / none_ms:.2f}")
        wait_drained(service)  # the async calls above left proofs queued

        loop = ProverLoop(package)
        try:
            for clients in CONCURRENCY:
                ours, loop_rate = alternating(
                    loop, args.loop_seconds, lambda c=clients: closed_loop(service, c, args.proof_seconds, "sync"),
                    args.proof_rounds)
                results["proofs_per_s"][f"sync_{clients}"] = {"service": ours, "prover_loop": loop_rate,
                                                              "ratio": ours / loop_rate}
                print(f"proofs sync  clients={clients:>2}  service {ours:8.2f}/s  Prover loop {loop_rate:8.2f}/s  "
                      f"ratio {ours / loop_rate:.2f}")
            wait_drained(service)
            burst, loop_rate = bracketed(loop, args.loop_seconds, lambda: async_burst(service, 32, args.burst))
            results["prover_loop_windows"] = loop.windows
        finally:
            loop.close()
        # The burst runs ~2 minutes; the loop's 8 s windows vary by up to 20% here, so two of them
        # are a noisy yardstick: its baseline is the mean of every loop window of the proof phase
        # (alternated with the service throughout); the bracketing pair's ratio is kept beside it.
        phase_mean = sum(loop.windows) / len(loop.windows)
        burst["prover_loop"], burst["ratio"] = phase_mean, burst["proofs_per_s"] / phase_mean
        burst["prover_loop_bracketing"], burst["ratio_bracketing"] = loop_rate, burst["proofs_per_s"] / loop_rate
        results["proofs_per_s"]["async_burst_32_clients"] = burst
        print(f"proofs async burst of {burst['requests']}: accepted in {burst['accepted_in_s']:.1f} s, all proven in "
              f"{burst['all_proven_in_s']:.1f} s, {burst['proofs_per_s']:.2f}/s, ratio {burst['ratio']:.2f}")
    results["load_after"] = os.getloadavg()
    results["ratios"] = {
        "predictions_1_client": results["predictions_per_s"]["1"]["ratio"],
        "predictions_32_clients": results["predictions_per_s"]["32"]["ratio"],
        "async_latency_over_none": results["latency_ms"]["ratio"],
        "proofs_sync_32_clients": results["proofs_per_s"]["sync_32"]["ratio"],
        "proofs_sync_1_client": results["proofs_per_s"]["sync_1"]["ratio"],
        "proofs_async_burst": burst["ratio"],
    }
    results["targets"] = {"predictions_1_client": 0.5, "predictions_32_clients": 1.0, "async_latency_over_none": 1.2,
                          "proofs_sync_32_clients": 0.9, "proofs_async_burst": 0.9}
    save("serving", results)


if __name__ == "__main__":
    main()
