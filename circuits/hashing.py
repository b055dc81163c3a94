"""File hashes used by manifests and model ids."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


MODEL_ID_DOMAIN = "zkserve-model-id-v2"


def model_id_from_hashes(vk_sha256: str, settings_sha256: str, srs_sha256: str) -> str:
    """A circuit's identity, as a 0x-prefixed bytes32: sha256 over a canonical encoding of
    everything that defines the circuit and how its proofs verify: the verification key,
    settings.json (scales, visibility, layout) and the SRS the key was made with."""
    material = json.dumps({"domain": MODEL_ID_DOMAIN, "settings": settings_sha256, "srs": srs_sha256,
                           "vk": vk_sha256}, sort_keys=True, separators=(",", ":"))
    return "0x" + hashlib.sha256(material.encode()).hexdigest()


def model_id_of(vk_path: Path, settings_path: Path, srs_path: Path) -> str:
    return model_id_from_hashes(sha256_file(vk_path), sha256_file(settings_path), sha256_file(srs_path))
