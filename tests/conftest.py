"""Session fixtures: circuit packages are compiled once per session (and cached across
sessions under .zkserve/test-home, keyed by everything that goes into them)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
TEST_HOME = Path(os.environ.get("ZKSERVE_TEST_HOME", REPO / ".zkserve" / "test-home"))
os.environ["ZKSERVE_HOME"] = str(TEST_HOME)  # before anything asks for the state dir

from circuits import CircuitPackage, CompileOptions, Prover  # noqa: E402
from circuits.demo import demo_files, ensure_demo_packages  # noqa: E402

ONNX_TEST_DATA = Path(__import__("onnx").__file__).parent / "backend" / "test" / "data"


@pytest.fixture(scope="session")
def demo_packages() -> dict[str, CircuitPackage]:
    return ensure_demo_packages()


@pytest.fixture(scope="session")
def mlp_package(demo_packages) -> CircuitPackage:
    return demo_packages["demo-mlp"]


@pytest.fixture(scope="session")
def cnn_package(demo_packages) -> CircuitPackage:
    return demo_packages["demo-cnn"]


@pytest.fixture(scope="session")
def mlp_rows() -> np.ndarray:
    return np.load(demo_files("demo-mlp")[1])


@pytest.fixture(scope="session")
def cnn_rows() -> np.ndarray:
    return np.load(demo_files("demo-cnn")[1])


@pytest.fixture(scope="session")
def mlp_prover(mlp_package) -> Prover:
    return Prover(mlp_package)


@pytest.fixture(scope="session")
def mlp_proof(mlp_prover, mlp_rows):
    return mlp_prover.prove(mlp_rows[:1])


@pytest.fixture(scope="session")
def cnn_proof(cnn_package, cnn_rows):
    return Prover(cnn_package).prove(cnn_rows[:1])


@pytest.fixture(scope="session")
def mlp_batch4_package() -> CircuitPackage:
    return ensure_demo_packages(["demo-mlp"], CompileOptions(batch=4))["demo-mlp"]


def run_cli(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Runs `zkserve ARGS` in a child process, as a user would."""
    return subprocess.run([sys.executable, "-m", "serve.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, cwd=REPO)


def copy_package(package: CircuitPackage, destination: Path) -> Path:
    target = destination / package.root.name
    shutil.copytree(package.root, target)
    return target
