"""The demo models shipped with zkserve (`demo-mlp`, `demo-cnn`) and their circuit packages."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

from circuits.compile import CompileOptions, compile_model
from circuits.package import CircuitPackage

DEMO_DIR = Path(__file__).resolve().parent
DEMO_NAMES = ("demo-mlp", "demo-cnn")
# Every input of the demo models is drawn from [-1, 1] (their calibration rows are 32 uniform
# draws from it, whose per-feature extremes fall short of it): the circuit is proven on all of it.
DEMO_INPUT_RANGE = (-1.0, 1.0)


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
    """Compiles (or reuses from the state directory's cache) each demo model's package, with
    the input domain [-1, 1] unless ``options`` names one."""
    if options.input_range is None and options.input_ranges_file is None:
        options = replace(options, input_range=DEMO_INPUT_RANGE)
    packages = {}
    for name in names or DEMO_NAMES:
        model, calibration = demo_files(name)
        packages[name] = compile_model(model, name, options, calibration=calibration, on_stage=on_stage)
    return packages
