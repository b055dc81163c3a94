"""Addresses of deployed contracts, per chain id, in ``<state dir>/chain/deployments.json``."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from serve.files import write_atomically

_lock = threading.Lock()


class Deployments:
    def __init__(self, path: Path):
        self.path = Path(path)

    def _read(self) -> dict:
        return json.loads(self.path.read_text()) if self.path.is_file() else {}

    def _write(self, data: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, json.dumps(data, indent=2, sort_keys=True).encode())

    def get(self, chain_id: int) -> dict:
        return self._read().get(str(chain_id), {})

    def update(self, chain_id: int, **entries) -> dict:
        with _lock:
            data = self._read()
            chain = data.setdefault(str(chain_id), {})
            for key, value in entries.items():
                if isinstance(value, dict) and isinstance(chain.get(key), dict):
                    chain[key].update(value)
                else:
                    chain[key] = value
            self._write(data)
            return chain
