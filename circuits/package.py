"""A circuit package: the directory `zkserve compile` writes, and its integrity check.

Layout (every file hashed in manifest.json):
    model.onnx  settings.json  model.compiled  pk.key  vk.key  kzg.srs
    Verifier.sol  Verifier.json (ABI + creation bytecode)  manifest.json
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from circuits import srs as srs_trust
from circuits.domain import DomainError, InputDomain
from circuits.hashing import model_id_from_hashes, sha256_file

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
FORMAT_VERSION = 2  # 2: model_id covers vk + settings + SRS; input_domain; SRS status


class PackageError(ValueError):
    """A circuit package is missing, malformed or was changed after compilation."""


@dataclass(frozen=True)
class CircuitPackage:
    root: Path
    manifest: dict
    # sha256 of SRS files the operator trusts as ceremony files (beside the shipped list and
    # $ZKSERVE_SRS_TRUSTED_SHA256); None: those two only.
    trusted_srs: frozenset[str] | None = None

    @classmethod
    def load(cls, path: str | Path, check: bool = True, trusted_srs: Iterable[str] | None = None) -> CircuitPackage:
        root = Path(path).resolve()
        manifest_path = root / MANIFEST
        if not manifest_path.is_file():
            raise PackageError(f"{root} is not a circuit package: {MANIFEST} is missing (run `zkserve compile`)")
        try:
            manifest = json.loads(manifest_path.read_text())
        except ValueError as error:
            raise PackageError(f"{manifest_path} is not valid JSON: {error}") from None
        if not isinstance(manifest, dict):
            raise PackageError(f"{manifest_path} is not a circuit package manifest")
        try:
            trusted = srs_trust.trusted_hashes(trusted_srs)
        except srs_trust.SrsConfigError as error:
            raise PackageError(str(error)) from None
        package = cls(root, manifest, trusted)
        if check:
            package.check_integrity()
        return package

    def check_integrity(self) -> None:
        """Every file must match its manifest hash, and model_id must be the hash of the key,
        the settings and the SRS; the input domain must be readable."""
        if self.manifest.get("format") != FORMAT_VERSION:
            raise PackageError(f"circuit package {self.name!r} has format {self.manifest.get('format')!r}, this "
                               f"zkserve reads format {FORMAT_VERSION}; recompile the model")
        hashes = {}
        for name, expected in self.manifest.get("files", {}).items():
            path = self.root / name
            if not path.is_file():
                raise PackageError(f"circuit package {self.name!r}: file {name} is missing from {self.root}")
            hashes[name] = sha256_file(path)
            if hashes[name] != expected:
                raise PackageError(
                    f"circuit package {self.name!r}: file {name} does not match its sha256 in {MANIFEST} "
                    f"(corrupted or edited after compile; recompile the model)"
                )
        missing = set(FILES.values()) - set(hashes)
        if missing:
            raise PackageError(
                f"circuit package {self.name!r}: {MANIFEST} lists no hash for {', '.join(sorted(missing))}"
            )
        computed = model_id_from_hashes(hashes[FILES["vk"]], hashes[FILES["settings"]], hashes[FILES["srs"]])
        if computed != self.model_id:
            raise PackageError(
                f"circuit package {self.name!r}: model_id {self.model_id} is not the hash of its "
                f"vk.key, settings.json and kzg.srs ({computed})"
            )
        if self.manifest.get("srs", {}).get("sha256") != hashes[FILES["srs"]]:
            raise PackageError(f"circuit package {self.name!r}: the SRS entry of {MANIFEST} does not match kzg.srs")
        try:
            _ = self.input_domain  # parsed once here so a damaged domain fails the load, not a request
        except (DomainError, KeyError, TypeError, ValueError) as error:
            raise PackageError(f"circuit package {self.name!r}: bad input_domain in {MANIFEST}: {error}") from None

    # --- identity ---------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.manifest.get("name", self.root.name)

    @property
    def model_id(self) -> str:
        return self.manifest["model_id"]

    @property
    def srs_status(self) -> str:
        """ "dev" (generated locally), "ceremony" (its sha256 is a known ceremony file's) or
        "unverified" (any other file): decided from the hash on every load, never read from a flag."""
        entry = self.manifest["srs"]
        return srs_trust.classify(entry.get("source", ""), entry["sha256"], self.trusted_srs)

    @property
    def insecure(self) -> bool:
        """True unless the SRS is a known ceremony file: whoever made it may forge proofs."""
        return self.srs_status != srs_trust.CEREMONY

    @property
    def srs_note(self) -> str:
        return srs_trust.NOTES[self.srs_status]

    @cached_property
    def input_domain(self) -> InputDomain:
        """The per-feature box of inputs the circuit is proven accurate on."""
        return InputDomain.from_manifest(self.manifest)

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
        status = self.srs_status
        srs = {"dev": "INSECURE dev SRS", "unverified": "INSECURE unverified SRS"}.get(
            status, f"ceremony SRS sha256 {self.manifest['srs']['sha256'][:12]}"
        )
        return f"{self.name} (model_id {self.model_id[:18]}..., logrows {self.manifest['logrows']}, {srs})"
