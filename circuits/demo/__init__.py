"""The demo models shipped with zkserve (`demo-mlp`, `demo-cnn`) and their circuit packages."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from circuits.compile import CompileOptions, compile_model
from circuits.package import CircuitPackage

DEMO_DIR = Path(__file__).resolve().parent
DEMO_NAMES = ("demo-mlp", "demo-cnn")


def demo_files(name: str) -> tuple[Path, Path]:
    """(model.onnx, calibration.npy) of a demo model."""
    if name not in DEMO_NAMES:
        raise KeyError(f"unknown demo model {name!r}; known: {', '.join(DEMO_NAMES)}")
    return DEMO_DIR / f"{name}.onnx", DEMO_DIR / f"{name}.calibration.npy"


def ensure_demo_packages(
    names: Iterable[str] | None = None,
    options: CompileOptions = CompileOptions(),
    on_stage: Callable[[str], None] | None = None,
) -> dict[str, CircuitPackage]:
    """Compiles (or reuses from the state directory's cache) each demo model's package."""
    packages = {}
    for name in names or DEMO_NAMES:
        model, calibration = demo_files(name)
        packages[name] = compile_model(model, name, options, calibration=calibration, on_stage=on_stage)
    return packages
