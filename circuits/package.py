"""A circuit package: the directory `zkserve compile` writes, and its integrity check.

Layout (every file hashed in manifest.json):
    model.onnx  settings.json  model.compiled  pk.key  vk.key  kzg.srs
    Verifier.sol  Verifier.json (ABI + creation bytecode)  manifest.json
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from circuits.hashing import model_id_of, sha256_file

MANIFEST = "manifest.json"
FILES = {
    "onnx": "model.onnx",
    "settings": "settings.json",
    "compiled": "model.compiled",
    "pk": "pk.key",
    "vk": "vk.key",
    "srs": "kzg.srs",
    "verifier_sol": "Verifier.sol",
    "verifier_artifact": "Verifier.json",
}
FORMAT_VERSION = 1


class PackageError(ValueError):
    """A circuit package is missing, malformed or was changed after compilation."""


@dataclass(frozen=True)
class CircuitPackage:
    root: Path
    manifest: dict

    @classmethod
    def load(cls, path: str | Path, check: bool = True) -> CircuitPackage:
        root = Path(path).resolve()
        manifest_path = root / MANIFEST
        if not manifest_path.is_file():
            raise PackageError(f"{root} is not a circuit package: {MANIFEST} is missing (run `zkserve compile`)")
        try:
            manifest = json.loads(manifest_path.read_text())
        except ValueError as error:
            raise PackageError(f"{manifest_path} is not valid JSON: {error}") from None
        package = cls(root, manifest)
        if check:
            package.check_integrity()
        return package

    def check_integrity(self) -> None:
        """Every file must match its manifest hash, and the key must match `model_id`."""
        for name, expected in self.manifest.get("files", {}).items():
            path = self.root / name
            if not path.is_file():
                raise PackageError(f"circuit package {self.name!r}: file {name} is missing from {self.root}")
            if sha256_file(path) != expected:
                raise PackageError(
                    f"circuit package {self.name!r}: file {name} does not match its sha256 in {MANIFEST} "
                    f"(corrupted or edited after compile; recompile the model)"
                )
        missing = set(FILES.values()) - set(self.manifest.get("files", {}))
        if missing:
            raise PackageError(
                f"circuit package {self.name!r}: {MANIFEST} lists no hash for {', '.join(sorted(missing))}"
            )
        if model_id_of(self.vk_path) != self.model_id:
            raise PackageError(f"circuit package {self.name!r}: vk.key does not hash to model_id {self.model_id}")

    # --- identity ---------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.manifest.get("name", self.root.name)

    @property
    def model_id(self) -> str:
        return self.manifest["model_id"]

    @property
    def insecure(self) -> bool:
        """True when the SRS was generated locally: whoever made it can forge proofs."""
        return bool(self.manifest["srs"]["insecure"])

    @property
    def batch_size(self) -> int:
        return int(self.manifest["batch_size"])

    @property
    def tolerance(self) -> float:
        return float(self.manifest["tolerance"])

    @property
    def inputs(self) -> list[dict]:
        return self.manifest["inputs"]

    @property
    def outputs(self) -> list[dict]:
        return self.manifest["outputs"]

    # --- files ------------------------------------------------------------------------
    def path(self, kind: str) -> Path:
        return self.root / FILES[kind]

    onnx_path = property(lambda self: self.path("onnx"))
    settings_path = property(lambda self: self.path("settings"))
    compiled_path = property(lambda self: self.path("compiled"))
    pk_path = property(lambda self: self.path("pk"))
    vk_path = property(lambda self: self.path("vk"))
    srs_path = property(lambda self: self.path("srs"))
    verifier_sol_path = property(lambda self: self.path("verifier_sol"))

    @cached_property
    def settings(self) -> dict:
        return json.loads(self.settings_path.read_text())

    def verifier_artifact(self) -> dict:
        """ABI and creation bytecode of the EZKL Halo2 verifier, compiled by solc-js."""
        return json.loads(self.path("verifier_artifact").read_text())

    def describe(self) -> str:
        srs = "INSECURE dev SRS" if self.insecure else f"SRS sha256 {self.manifest['srs']['sha256'][:12]}"
        return f"{self.name} (model_id {self.model_id[:18]}..., logrows {self.manifest['logrows']}, {srs})"
