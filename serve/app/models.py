"""Which models the app serves: circuit packages resolved from the config's model list.

A spec carries no path: the package travels by model_id (``circuits.transport``). The process
that builds the app puts each package in the Ray object store once (``publish``); a replica on
any node materialises it into its node-local cache and loads it from there, so no node reads
the head's state directory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from circuits import CircuitPackage
from circuits.domain import InputDomain
from circuits.package import PackageError
from circuits.transport import PackageRef
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

    @cached_property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)


@dataclass(frozen=True)
class ModelSpec:
    """What every deployment needs to know about one model; small and picklable."""

    name: str
    model_id: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    circuit_batch_size: int  # rows per proof
    tolerance: float
    visibility: dict
    insecure_srs: bool
    input_domain: InputDomain  # attested rows outside it are refused before proving
    package: PackageRef | None = None  # the files, in the object store; None until published

    @classmethod
    def from_package(cls, package: CircuitPackage, source: PackageRef | None = None) -> ModelSpec:
        """``source``: the package in the object store; by default put there now when Ray is up (the
        object is owned by this process). Without Ray (building the app only to inspect it) the spec
        carries no package, and a replica made from it refuses to start, saying so."""
        import ray

        if source is None and ray.is_initialized():
            source = PackageRef.publish(package)

        def specs(entries: list[dict]) -> tuple[TensorSpec, ...]:
            return tuple(TensorSpec(e["name"], tuple(int(d) for d in e["shape"][1:]), str(e["dtype"])) for e in entries)

        return cls(
            name=package.name,
            model_id=package.model_id,
            inputs=specs(package.inputs),
            outputs=specs(package.outputs),
            circuit_batch_size=package.batch_size,
            tolerance=package.tolerance,
            visibility=dict(package.manifest.get("visibility", {})),
            insecure_srs=package.insecure,
            input_domain=package.input_domain,
            package=source,
        )

    @cached_property
    def inputs_by_name(self) -> dict[str, TensorSpec]:
        return {t.name: t for t in self.inputs}

    def load_package(self) -> CircuitPackage:
        """The package from this node's cache (materialised from the object store on first use)."""
        if self.package is None:
            raise PackageError(f"model {self.name} ({self.model_id}) was not put in the object store: build the app "
                               "with Ray initialised (serve.app.start or app_builder)")
        return self.package.load()

    @property
    def onnx_path(self) -> str:
        return str(self.load_package().onnx_path)


def resolve_packages(entries: list[str]) -> dict[str, CircuitPackage]:
    """Demo names are compiled (cached under the state dir); anything else is a package dir.
    Reads local paths: for the process that builds the app (or starts the verifier) only."""
    from circuits.demo import DEMO_NAMES, ensure_demo_packages

    demo_names = [entry for entry in entries if entry in DEMO_NAMES]
    demo_packages = ensure_demo_packages(demo_names) if demo_names else {}
    packages: dict[str, CircuitPackage] = {}
    for entry in entries:
        package = demo_packages[entry] if entry in DEMO_NAMES else CircuitPackage.load(entry)
        if package.name in packages:
            raise ValueError(f"two served models are both named {package.name!r}; rename one when compiling")
        packages[package.name] = package
    return packages


def resolve_models(entries: list[str]) -> dict[str, ModelSpec]:
    """The served models' specs, each package put in the object store once when Ray is up (as in
    ``start`` and ``app_builder``): owned by this process, the builder of the app."""
    return {name: ModelSpec.from_package(package) for name, package in resolve_packages(entries).items()}
