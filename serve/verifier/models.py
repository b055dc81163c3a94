"""The circuit packages the verifier knows, looked up by model id or name, and the
off-chain check of a proof against one of them."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from circuits import CircuitPackage, PackageError, Proof, verify_proof
from serve.verifier.documents import ProofShape, proof_shape

log = logging.getLogger(__name__)


class UnknownModel(LookupError):
    pass


class AmbiguousModel(LookupError):
    pass


class ModelCatalog:
    """Packages given explicitly, plus every package under ``<state dir>/circuits`` (rescanned
    when a lookup misses, so models compiled after start are found)."""

    def __init__(self, state_dir: Path, package_dirs: list[Path] = ()):
        self.scan_dir = Path(state_dir) / "circuits"
        self._explicit = [CircuitPackage.load(path) for path in package_dirs]
        self._scanned: dict[Path, CircuitPackage] = {}
        self._shapes: dict[str, ProofShape] = {}
        self._lock = threading.Lock()
        self._rescan()

    def _rescan(self) -> None:
        with self._lock:
            for manifest in sorted(self.scan_dir.glob("*/manifest.json")):
                root = manifest.parent.resolve()
                if root in self._scanned or root.name.endswith(".partial"):
                    continue
                try:
                    self._scanned[root] = CircuitPackage.load(root)
                except PackageError as error:
                    log.warning("skipping circuit package %s: %s", root, error)

    def shape(self, package: CircuitPackage) -> ProofShape:
        """The proof shape of a package, read once from its verifier contract."""
        with self._lock:
            if package.model_id not in self._shapes:
                self._shapes[package.model_id] = proof_shape(package)
            return self._shapes[package.model_id]

    def packages(self) -> list[CircuitPackage]:
        return self._explicit + [p for p in self._scanned.values() if p.root not in {e.root for e in self._explicit}]

    def _find(self, ref: str) -> list[CircuitPackage]:
        by_id = [p for p in self.packages() if p.model_id.lower() == ref.lower()]
        if by_id:
            return by_id[:1]
        named = [p for p in self._explicit if p.name == ref] or [p for p in self.packages() if p.name == ref]
        return named

    def resolve(self, ref: str) -> CircuitPackage:
        """A package by ``0x`` model id or by name."""
        ref = ref.strip()
        if not ref:
            raise UnknownModel("model_id is empty; give the model id (0x + 64 hex) or the package name")
        found = self._find(ref)
        if not found:
            self._rescan()
            found = self._find(ref)
        if not found:
            known = ", ".join(sorted({f"{p.name} ({p.model_id[:10]}...)" for p in self.packages()})) or "none"
            raise UnknownModel(f"no circuit package for model {ref!r}; known: {known}")
        if len({p.model_id for p in found}) > 1:
            ids = ", ".join(p.model_id for p in found)
            raise AmbiguousModel(f"name {ref!r} matches several circuit packages ({ids}); pass the model id instead")
        return found[0]


@dataclass(frozen=True)
class Verdict:
    valid: bool
    reason: str = ""


def check_proof(package: CircuitPackage, proof: Proof) -> Verdict:
    """EZKL verification against the package's key. Only the proof bytes and instances are
    checked, so only they are ever used afterwards."""
    if proof.model_id.lower() != package.model_id.lower():
        return Verdict(False, f"the proof is for model {proof.model_id}, not {package.name} ({package.model_id})")
    try:
        proof.proof_bytes, proof.instances  # noqa: B018 - malformed fields fail here, not in EZKL
    except (KeyError, TypeError, ValueError) as error:
        return Verdict(False, f"malformed proof document: {type(error).__name__}: {error}")
    try:
        valid = verify_proof(package, proof)
    except BaseException as error:  # noqa: BLE001 - EZKL (pyo3) panics are BaseException
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise
        return Verdict(False, f"EZKL could not check the proof: {type(error).__name__}")
    if not valid:
        return Verdict(
            False, f"the proof does not verify against the verification key of {package.name} ({package.model_id})"
        )
    return Verdict(True)
