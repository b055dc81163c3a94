"""Proofs/s with the provers on one Ray node against the same provers spread over two nodes.

    .venv/bin/python -m bench.bench_nodes [--proofs 24] [--provers 2]

A local cluster of two raylets on this machine (tests/e2e/ray_nodes.py: own temp dir, own
package cache, a custom resource each, num_cpus=1 each). A "node of one CPU" is simulated by
pinning every prover placed on a node to that node's core (node a: the first core, node b: the
second): on one machine the raylets otherwise share all cores and the comparison would mean
nothing. The package travels by model_id (object store -> each node's cache), as in serving.

one_node: --provers demo-mlp provers (RAYON_NUM_THREADS=1), all on node a (one core).
two_nodes: the same provers, spread round-robin over nodes a and b (one core each).
Each prover proves one warm-up proof first (not timed); then --proofs proofs are split evenly
and timed to the last; every proof is verified. Writes bench/results/nodes.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("ZKSERVE_HOME", str(Path(__file__).resolve().parent.parent / ".zkserve" / "bench-home"))

import numpy as np  # noqa: E402

from bench.common import save  # noqa: E402
from circuits import Proof, verify_proof  # noqa: E402
from circuits.demo import demo_files, ensure_demo_packages  # noqa: E402
from circuits.transport import PackageRef  # noqa: E402
from tests.e2e.ray_nodes import LocalCluster, resource  # noqa: E402

MODEL = "demo-mlp"
NODES = ("a", "b")


class BenchProver:
    """One prover: pinned to its node's core, the package from its node's cache."""

    def __init__(self, source: PackageRef, core: int):
        from circuits import Prover

        os.sched_setaffinity(0, {core})
        self.prover = Prover(source.load())

    def prove(self, row: np.ndarray) -> tuple[float, str]:
        started = time.perf_counter()
        proof = self.prover.prove([row[None, :]])
        return time.perf_counter() - started, proof.to_json()


def run_case(ray, source: PackageRef, rows: np.ndarray, placement: list[str], proofs: int) -> dict:
    cores = sorted(os.sched_getaffinity(0))
    remote = ray.remote(BenchProver)
    actors = [remote.options(num_cpus=0.5, resources={resource(node): 0.1},
                             runtime_env={"env_vars": {"RAYON_NUM_THREADS": "1"}})
              .remote(source, cores[NODES.index(node) % len(cores)]) for node in placement]
    ray.get([actor.prove.remote(rows[0]) for actor in actors])  # warm-up: package, keys, first proof
    started = time.perf_counter()
    results = ray.get([actors[index % len(actors)].prove.remote(rows[index % len(rows)]) for index in range(proofs)])
    seconds = time.perf_counter() - started
    for actor in actors:
        ray.kill(actor)
    return {"placement": placement, "proofs": proofs, "seconds": round(seconds, 3),
            "proofs_per_s": round(proofs / seconds, 3),
            "mean_proof_s": round(float(np.mean([r[0] for r in results])), 3),
            "proofs_json": [r[1] for r in results]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proofs", type=int, default=24)
    parser.add_argument("--provers", type=int, default=2)
    args = parser.parse_args()
    package = ensure_demo_packages([MODEL])[MODEL]
    rows = np.load(demo_files(MODEL)[1]).astype(np.float32)
    cluster = LocalCluster(Path(tempfile.mkdtemp(prefix="zkserve-bench-nodes-")), {node: 1 for node in NODES})
    os.environ.update(RAY_AUTH_MODE=cluster.client_env["RAY_AUTH_MODE"])
    load_before = os.getloadavg()[0]
    cluster.start()
    try:
        import ray

        ray.init(address=cluster.address, log_to_driver=False, include_dashboard=False)
        source = PackageRef.publish(package)
        cases = {
            "one_node": run_case(ray, source, rows, ["a"] * args.provers, args.proofs),
            "two_nodes": run_case(ray, source, rows, [NODES[i % 2] for i in range(args.provers)], args.proofs),
        }
        ray.shutdown()
    finally:
        cluster.stop()
    for case in cases.values():
        case["verified"] = all(verify_proof(package, Proof.from_json(text)) for text in case.pop("proofs_json"))
    save("nodes", {
        "model": MODEL, "model_id": package.model_id, "provers": args.provers, "cases": cases,
        "load_average_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "speedup_two_nodes": round(cases["two_nodes"]["proofs_per_s"] / cases["one_node"]["proofs_per_s"], 2),
        "note": (f"one machine with {os.cpu_count()} cores, shared with other work while this ran; the two 'nodes' "
                 "are two raylets on it (own temp dir, package cache, custom resource), each simulating a node "
                 "of one CPU by pinning its provers to its own core. Not a measurement of a real network."),
    })


if __name__ == "__main__":
    main()
