"""Structured reference strings: a generated dev SRS, or a ceremony file pinned by hash."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import ezkl

from circuits.hashing import sha256_file

INSECURE_NOTE = (
    "generated locally by ezkl.gen_srs: whoever holds its toxic waste can forge proofs; "
    "for development only, use a ceremony SRS (--srs) in production"
)


@dataclass(frozen=True)
class SrsSource:
    path: Path | None  # None -> generate a dev SRS for the circuit's logrows
    """A ceremony file given with --srs, or None for the dev SRS."""

    @property
    def insecure(self) -> bool:
        return self.path is None

    def cache_token(self) -> str:
        return "dev" if self.path is None else sha256_file(self.path)

    def materialize(self, logrows: int, cache_dir: Path, destination: Path) -> dict:
        """Copies the SRS for `logrows` to `destination`; returns its manifest entry."""
        if self.path is None:
            cached = cache_dir / f"dev-k{logrows}.srs"
            if not cached.is_file():
                cache_dir.mkdir(parents=True, exist_ok=True)
                partial = cached.with_suffix(".partial")
                ezkl.gen_srs(str(partial), logrows)
                partial.replace(cached)
            source = cached
        else:
            source = self.path
        shutil.copyfile(source, destination)
        return {
            "source": "dev" if self.insecure else str(self.path),
            "sha256": sha256_file(destination),
            "insecure": self.insecure,
            "note": INSECURE_NOTE if self.insecure else "user-supplied ceremony SRS, pinned by sha256",
        }
