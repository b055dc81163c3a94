"""Batch scoring with proofs: `zkserve score` against the naive loop a user would write.

    .venv/bin/python -m bench.bench_scoring [--rows 512] [--proof-batch 32] [--naive-budget-s 90]
        [--sampled-rows 100000 --sample 0.01]

naive: one process, for each row write input.json, `ezkl.gen_witness`, `ezkl.prove` with an
untuned package (EZKL's default decomposition, 16384 x 2 legs, one row per proof).
zkserve: `score()` on Ray Data (prover actors x RAYON_NUM_THREADS = cores) with the tuned
package and N rows per proof, timed end to end including Ray start-up and the merge.
Both score the same rows; the naive loop stops after --naive-budget-s and its rate comes
from the rows it finished. Writes bench/results/scoring.json; `speedup` is the rows/s ratio.
sampled: `score(sample=F)` on a CSV of --sampled-rows rows (every row inferred and committed to a
Merkle root, a fraction F proven), end to end; `committed_s`: start to the commitment (Ray start,
CSV streaming, inference, leaves, root), `verify_s`: `verify_job` with the input file;
`sampled_speedup` is its rows/s over the naive loop's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("ZKSERVE_HOME", str(Path(__file__).resolve().parent.parent / ".zkserve" / "bench-home"))

import ezkl  # noqa: E402
import numpy as np  # noqa: E402

from bench.common import save  # noqa: E402
from circuits import CompileOptions, compile_model  # noqa: E402
from circuits.demo import demo_files, ensure_demo_packages  # noqa: E402

MODEL = "demo-mlp"
UNTUNED = CompileOptions(decomp_base=16384, decomp_legs=2)


def bench_rows(count: int) -> np.ndarray:
    calibration = np.load(demo_files(MODEL)[1])
    noise = np.random.default_rng(0).normal(0, 0.05, (count, calibration.shape[1]))
    return np.resize(calibration, (count, calibration.shape[1])) + noise


def naive(rows: np.ndarray, budget_s: float, work: Path) -> dict:
    onnx, calibration = demo_files(MODEL)
    started = time.perf_counter()
    package = compile_model(onnx, f"{MODEL}-untuned", UNTUNED, calibration=calibration)
    compile_s = time.perf_counter() - started
    paths = {kind: str(package.path(kind)) for kind in ("compiled", "pk", "srs")}
    done, started = 0, time.perf_counter()
    for row in rows:
        (work / "input.json").write_text(json.dumps({"input_data": [row.tolist()]}))
        ezkl.gen_witness(str(work / "input.json"), paths["compiled"], str(work / "witness.json"))
        ezkl.prove(str(work / "witness.json"), paths["compiled"], paths["pk"], str(work / "proof.json"), paths["srs"])
        done += 1
        if time.perf_counter() - started > budget_s:
            break
    seconds = time.perf_counter() - started
    return {"rows": done, "seconds": round(seconds, 3), "rows_per_s": round(done / seconds, 4),
            "logrows": package.manifest["logrows"], "compile_s_not_counted": round(compile_s, 1)}


def zkserve(rows: np.ndarray, proof_batch: int, work: Path) -> dict:
    from serve.scoring import ScoreOptions, score, verify_job

    ensure_demo_packages([MODEL], CompileOptions(batch=proof_batch))  # compile is not part of the timing
    np.save(work / "rows.npy", rows)
    started = time.perf_counter()
    summary = score(ScoreOptions(MODEL, work / "rows.npy", work / "job", proof_batch=proof_batch, progress=False))
    seconds = time.perf_counter() - started
    report = verify_job(work / "job")
    assert report.ok and summary.rows_scored == len(rows), report.describe()
    return {"rows": summary.rows_scored, "proofs": summary.proofs, "proof_batch": proof_batch,
            "seconds": round(seconds, 3), "rows_per_s": round(summary.rows_scored / seconds, 4),
            "pipeline_rows_per_s": summary.rows_per_s, "pipeline_proofs_per_s": summary.proofs_per_s,
            "steady_rows_per_s": summary.steady_rows_per_s,
            "provers": summary.provers, "prover_threads": summary.prover_threads, "verified": report.ok}


def sampled(rows: np.ndarray, proof_batch: int, fraction: float, work: Path) -> dict:
    from serve.scoring import ScoreOptions, score, verify_job

    package = ensure_demo_packages([MODEL], CompileOptions(batch=proof_batch))[MODEL]
    path = work / "sampled.csv"
    with open(path, "w") as out:  # CSV, the format large jobs arrive in
        out.write(",".join(f"f{i}" for i in range(rows.shape[1])) + "\n")
        np.savetxt(out, rows, fmt="%.6f", delimiter=",")
    started, wall = time.perf_counter(), time.time()
    summary = score(ScoreOptions(MODEL, path, work / "sampled-job", proof_batch=proof_batch,
                                 progress=False, sample=fraction))
    seconds = time.perf_counter() - started
    committed_s = (work / "sampled-job" / "commitment.json").stat().st_mtime - wall
    started = time.perf_counter()
    report = verify_job(work / "sampled-job", package, path)
    verify_s = time.perf_counter() - started
    # rows outside the circuit's input domain are refused into errors.csv, not scored
    assert report.ok and summary.rows_scored + summary.rows_failed == len(rows), report.describe()
    return {"rows": summary.rows_scored, "rows_refused": summary.rows_failed, "input": "csv", "sample": fraction,
            "rows_proven": summary.audit["sample_size"], "proofs": summary.proofs, "proof_batch": proof_batch,
            "seconds": round(seconds, 3), "rows_per_s": round(summary.rows_scored / seconds, 2),
            "committed_s": round(committed_s, 3), "verify_s": round(verify_s, 3),
            "fraction_caught_95pct": summary.audit["guarantee"]["fraction_caught_95pct"], "verified": report.ok}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--proof-batch", type=int, default=32)
    parser.add_argument("--naive-budget-s", type=float, default=90.0)
    parser.add_argument("--sampled-rows", type=int, default=100_000)
    parser.add_argument("--sample", type=float, default=0.01)
    args = parser.parse_args()
    rows = bench_rows(args.rows)
    with tempfile.TemporaryDirectory(prefix="zkserve-bench-scoring-") as tmp:
        work = Path(tmp)
        scored = zkserve(rows, args.proof_batch, work)
        audited = sampled(bench_rows(args.sampled_rows), args.proof_batch, args.sample, work)
        baseline = naive(rows, args.naive_budget_s, work)
    result = {
        "description": f"rows/s scoring {args.rows} {MODEL} rows with a proof each: zkserve score (Ray Data, tuned "
                       f"package, {args.proof_batch} rows/proof, end to end incl. Ray start-up) vs a naive one-process "
                       f"gen_witness+prove loop on the untuned package",
        "model": MODEL,
        "zkserve": scored,
        "naive": baseline,
        "speedup": round(scored["rows_per_s"] / baseline["rows_per_s"], 2),
        "sampled": audited,
        "sampled_speedup": round(audited["rows_per_s"] / baseline["rows_per_s"], 1),
        "versions_extra": {name: metadata.version(name) for name in ("pyarrow", "pandas")},
    }
    save("scoring", result)


if __name__ == "__main__":
    main()
