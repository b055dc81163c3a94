"""Which models the app serves: circuit packages resolved from the config's model list."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from circuits import CircuitPackage
from circuits.domain import InputDomain
from serve.protocol.types import DATATYPE_OF_NUMPY


@dataclass(frozen=True)
class TensorSpec:
    name: str
    row_shape: tuple[int, ...]  # shape without the batch dimension
    dtype: str  # numpy name, e.g. "float32"

    @property
    def datatype(self) -> str:
        return DATATYPE_OF_NUMPY[self.dtype]

    @property
    def row_elements(self) -> int:
        return math.prod(self.row_shape)

    @property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)


@dataclass(frozen=True)
class ModelSpec:
    """What every deployment needs to know about one model; small and picklable."""

    name: str
    package_root: str
    model_id: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    circuit_batch_size: int  # rows per proof
    tolerance: float
    visibility: dict
    insecure_srs: bool
    input_domain: InputDomain  # attested rows outside it are refused before proving

    @classmethod
    def from_package(cls, package: CircuitPackage) -> ModelSpec:
        def specs(entries: list[dict]) -> tuple[TensorSpec, ...]:
            return tuple(TensorSpec(e["name"], tuple(int(d) for d in e["shape"][1:]), str(e["dtype"])) for e in entries)

        return cls(
            name=package.name,
            package_root=str(package.root),
            model_id=package.model_id,
            inputs=specs(package.inputs),
            outputs=specs(package.outputs),
            circuit_batch_size=package.batch_size,
            tolerance=package.tolerance,
            visibility=dict(package.manifest.get("visibility", {})),
            insecure_srs=package.insecure,
            input_domain=package.input_domain,
        )

    @property
    def onnx_path(self) -> str:
        return str(Path(self.package_root) / "model.onnx")

    def load_package(self) -> CircuitPackage:
        return CircuitPackage.load(self.package_root)


def resolve_models(entries: list[str]) -> dict[str, ModelSpec]:
    """Demo names are compiled (cached under the state dir); anything else is a package dir."""
    from circuits.demo import DEMO_NAMES, ensure_demo_packages

    demo_names = [entry for entry in entries if entry in DEMO_NAMES]
    demo_packages = ensure_demo_packages(demo_names) if demo_names else {}
    specs: dict[str, ModelSpec] = {}
    for entry in entries:
        package = demo_packages[entry] if entry in DEMO_NAMES else CircuitPackage.load(entry)
        spec = ModelSpec.from_package(package)
        if spec.name in specs:
            raise ValueError(f"two served models are both named {spec.name!r}; rename one when compiling")
        specs[spec.name] = spec
    return specs
