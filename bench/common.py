"""Shared by the benchmarks: where results go and what machine they ran on."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def interleaved_ms(calls: dict[str, Callable[[], object]], count: int, rounds: int) -> dict[str, float]:
    """Mean latency in ms of each named call, ``count`` calls in all, timed in ``rounds`` rounds
    that run every call back to back in turn (the order rotated each round): on this shared VM
    the same call runs 30-50% slower from one second to the next, so nothing is compared across time."""
    names = list(calls)
    for name in names:  # warm the channels and each path's first calls
        for _ in range(20):
            calls[name]()
    spent = dict.fromkeys(names, 0.0)
    per_round = max(1, count // rounds)
    for round_ in range(rounds):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            call, began = calls[name], time.perf_counter()
            for _ in range(per_round):
                call()
            spent[name] += time.perf_counter() - began
    return {name: seconds / (rounds * per_round) * 1000 for name, seconds in spent.items()}


def machine() -> dict:
    versions = {}
    for package in ("ezkl", "onnxruntime-gpu", "ray", "grpcio", "web3", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def save(name: str, result: dict) -> Path:
    """Writes bench/results/NAME.json (with the machine) and prints it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    document = {"benchmark": name, **result, "machine": machine()}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(document, indent=2))
    print(json.dumps(document, indent=2))
    return path
