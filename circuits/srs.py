"""Structured reference strings: a generated dev SRS, or a file given with --srs, pinned by hash.

Whoever knows an SRS's secret (its "toxic waste") can forge proofs for every key made with
it. A file counts as a ceremony SRS only when its sha256 is on a list of known public
ceremony files: the list shipped here plus the operator's (`srs.trusted_sha256` in the
config, or $ZKSERVE_SRS_TRUSTED_SHA256). Any other file is an "unverified SRS" and as
insecure as a dev SRS: nothing distinguishes a ceremony download from a locally generated
file but its hash.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import ezkl
import yaml

from circuits.hashing import sha256_file

# sha256 of known public ceremony SRS files (EZKL's `get_srs` downloads the Perpetual Powers of
# Tau files converted to halo2 format, kzg{k}.srs from trusted-setup-halo2kzg.s3...amazonaws.com/
# perpetual-powers-of-tau-raw-{k}). Neither EZKL's sources nor the converter's README
# (github.com/han0110/halo2-kzg-srs) publish a sha256 per file, and none could be established
# from another public source, so the shipped list is empty: an operator who downloaded and
# checked a ceremony file adds its hash to `srs.trusted_sha256`.
KNOWN_CEREMONY_SHA256: frozenset[str] = frozenset()

TRUSTED_ENV = "ZKSERVE_SRS_TRUSTED_SHA256"  # the config key srs.trusted_sha256 as an env override

DEV, CEREMONY, UNVERIFIED = "dev", "ceremony", "unverified"
NOTES = {
    DEV: "generated locally by ezkl.gen_srs: whoever holds its toxic waste can forge proofs; "
         "for development only, use a ceremony SRS (--srs) in production",
    UNVERIFIED: "unverified SRS: given with --srs, but its sha256 is on no list of known ceremony files "
                "(srs.trusted_sha256); whoever made it may be able to forge proofs",
    CEREMONY: "ceremony SRS: its sha256 is on the list of known public ceremony files",
}
INSECURE_NOTE = NOTES[DEV]


class SrsConfigError(ValueError):
    """A malformed list of trusted SRS hashes."""


def _normalise(digest: str) -> str:
    text = str(digest).strip().lower().removeprefix("0x")
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise SrsConfigError(f"srs.trusted_sha256: {digest!r} is not a sha256 hex digest")
    return text


def trusted_hashes(extra: Iterable[str] | None = None, environ: dict[str, str] | None = None) -> frozenset[str]:
    """The shipped ceremony hashes, plus `extra` (the config's srs.trusted_sha256), plus the
    environment's $ZKSERVE_SRS_TRUSTED_SHA256 (a YAML list, or hashes separated by commas)."""
    environ = os.environ if environ is None else environ
    hashes = set(KNOWN_CEREMONY_SHA256)
    for digest in extra or ():
        hashes.add(_normalise(digest))
    raw = environ.get(TRUSTED_ENV, "").strip()
    if raw:
        parsed = yaml.safe_load(raw) if raw.startswith("[") else raw.replace(",", " ").split()
        hashes.update(_normalise(d) for d in parsed or ())
    return frozenset(hashes)


def classify(source: str, sha256: str, trusted: frozenset[str] | None = None) -> str:
    """dev, ceremony or unverified: decided from the file's hash every time, never from a flag."""
    if source == DEV:
        return DEV
    return CEREMONY if sha256.lower() in (trusted_hashes() if trusted is None else trusted) else UNVERIFIED


@dataclass(frozen=True)
class SrsSource:
    path: Path | None  # None -> generate a dev SRS for the circuit's logrows
    """A file given with --srs, or None for the dev SRS."""

    def cache_token(self) -> str:
        return DEV if self.path is None else sha256_file(self.path)

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
        digest = sha256_file(destination)
        origin = DEV if self.path is None else str(self.path)
        status = classify(origin, digest)
        # "status" and "insecure" record what compile saw; the package loader decides again
        # from the hash and the trusted list it is given, so a flag here cannot launder an SRS.
        return {"source": origin, "sha256": digest, "status": status, "insecure": status != CEREMONY,
                "note": NOTES[status]}
