"""Packing a proof batch's arrays into one bytes cell of a Ray Data block (npz, no pickle)."""

from __future__ import annotations

import io

import numpy as np


def pack(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def unpack(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}
