"""Proving cost per row of the demo models: untuned, tuned, tuned + batch N, in one run.

    .venv/bin/python -m bench.bench_proving [--batches 1,8,32,128] [--repeats 3]

`untuned` is EZKL's default decomposition (16384 x 2 legs); `tuned` is zkserve's compile
default (128 x 4, chosen by `--tune` on the demo MLP). Batch N proves N rows in one proof.
Writes bench/results/proving.json; `speedup` is untuned per-row cost over the best tuned one.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("ZKSERVE_HOME", str(Path(__file__).resolve().parent.parent / ".zkserve" / "bench-home"))

import numpy as np  # noqa: E402

from bench.common import save  # noqa: E402
from circuits import CompileOptions, Prover, verify_proof  # noqa: E402
from circuits.demo import DEMO_NAMES, demo_files, ensure_demo_packages  # noqa: E402

UNTUNED = dict(decomp_base=16384, decomp_legs=2)


def per_row_seconds(name: str, options: CompileOptions, repeats: int) -> dict:
    package = ensure_demo_packages([name], options)[name]
    rows = np.load(demo_files(name)[1])
    batch = rows[: package.batch_size] if len(rows) >= package.batch_size else np.resize(
        rows, (package.batch_size, *rows.shape[1:]))
    prover = Prover(package)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        proof = prover.prove(batch)
        timings.append(time.perf_counter() - start)
    assert verify_proof(package, proof)
    best = min(timings)
    return {"batch": package.batch_size, "logrows": package.manifest["logrows"], "proof_s": round(best, 4),
            "per_row_s": round(best / package.batch_size, 5), "setup_s": package.manifest["timings_s"]["setup"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", default="1,8,32,128")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default=",".join(DEMO_NAMES))
    args = parser.parse_args()
    results = {}
    for name in args.models.split(","):
        rows = {"untuned": per_row_seconds(name, CompileOptions(**UNTUNED), args.repeats)}
        for batch in (int(b) for b in args.batches.split(",")):
            rows[f"tuned_batch{batch}"] = per_row_seconds(name, CompileOptions(batch=batch), args.repeats)
            print(name, batch, rows[f"tuned_batch{batch}"], flush=True)
        best = min(v["per_row_s"] for k, v in rows.items() if k != "untuned")
        rows["speedup"] = round(rows["untuned"]["per_row_s"] / best, 1)
        results[name] = rows
    save("proving", {"models": results, "speedup": min(r["speedup"] for r in results.values())})


if __name__ == "__main__":
    main()
