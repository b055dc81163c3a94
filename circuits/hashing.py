"""File hashes used by manifests and model ids."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_id_of(vk_path: Path) -> str:
    """A circuit's identity: sha256 of its verification key, as a 0x-prefixed bytes32."""
    return "0x" + sha256_file(vk_path)
