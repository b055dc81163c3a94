"""Shared by the benchmarks: where results go and what machine they ran on."""

from __future__ import annotations

import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


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
