"""Which circuit package a scoring job uses: a demo name or a package directory."""

from __future__ import annotations

from pathlib import Path

from circuits import CircuitPackage, CompileOptions
from circuits.demo import DEMO_NAMES, ensure_demo_packages


class ModelError(ValueError):
    """MODEL names no usable package, or one that does not fit the requested job."""


def resolve_package(model: str, proof_batch: int | None) -> CircuitPackage:
    """Demo names are compiled (or taken from the cache) with `proof_batch` rows per proof;
    a package directory must already have been compiled with that batch."""
    if proof_batch is not None and proof_batch < 1:
        raise ModelError(f"--proof-batch must be >= 1, not {proof_batch}")
    if model in DEMO_NAMES:
        package = ensure_demo_packages([model], CompileOptions(batch=proof_batch or 1))[model]
    elif Path(model).is_dir():
        package = CircuitPackage.load(model)  # PackageError says what is wrong with it
        if proof_batch is not None and proof_batch != package.batch_size:
            raise ModelError(f"package {package.name} proves {package.batch_size} row(s) per proof, not {proof_batch}; "
                             f"recompile it with `zkserve compile --batch {proof_batch}` or drop --proof-batch")
    else:
        raise ModelError(f"{model!r} is neither a demo model ({', '.join(DEMO_NAMES)}) nor a circuit package directory")
    if len(package.inputs) != 1:
        raise ModelError(f"{package.name} takes {len(package.inputs)} inputs; scoring reads one input per row")
    if package.manifest["visibility"]["output"] != "public":
        raise ModelError(f"{package.name} has {package.manifest['visibility']['output']} outputs: scoring needs public "
                         f"outputs to tie each row's scores to its proof")
    return package


def row_shape(package: CircuitPackage) -> list[int]:
    return list(package.inputs[0]["shape"][1:])
