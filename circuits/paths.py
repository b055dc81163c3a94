"""Where zkserve keeps its state: circuit cache, proofs, outbox, chain state."""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    """``$ZKSERVE_HOME``, else ``.zkserve/`` in the working directory; created on first use."""
    path = Path(os.environ.get("ZKSERVE_HOME", Path.cwd() / ".zkserve")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path
