"""Where zkserve keeps its state: one ``StatePaths`` names every file under the state directory.

The state directory comes from ONE place, with this precedence:

1. an explicit ``state_dir`` (the config's ``zkserve.state_dir`` or ``$ZKSERVE_STATE_DIR``),
2. ``$ZKSERVE_HOME``,
3. ``.zkserve/`` in the working directory.

A command that loads the config exports the resolved directory as ``$ZKSERVE_HOME``
(``StatePaths.export``), so the compile cache, the contracts cache, the verifier, Ray's
workers and every child process resolve the same directory: a package compiled for a YAML
``state_dir`` is found by the verifier started with that YAML, and the other way round.
This module lives in ``circuits`` because the offline pipeline (compile, SRS cache) needs it
without importing the serving side.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "ZKSERVE_HOME"
DEFAULT_DIRNAME = ".zkserve"


@dataclass(frozen=True)
class StatePaths:
    """Every path under the state directory; nothing else builds paths below ``root``."""

    root: Path

    @classmethod
    def resolve(cls, state_dir: str | Path | None = None, environ: Mapping[str, str] | None = None,
                cwd: Path | None = None) -> StatePaths:
        """explicit ``state_dir`` > ``$ZKSERVE_HOME`` > ``./.zkserve`` (made absolute, not created)."""
        environ = os.environ if environ is None else environ
        base = cwd or Path.cwd()
        chosen = state_dir or environ.get(HOME_ENV) or base / DEFAULT_DIRNAME
        path = Path(chosen).expanduser()
        return cls((path if path.is_absolute() else base / path).resolve())

    def ensure(self) -> StatePaths:
        self.root.mkdir(parents=True, exist_ok=True)
        return self

    def export(self, environ: MutableMapping[str, str] | None = None) -> None:
        """Makes this the state directory of this process and every child it starts."""
        (os.environ if environ is None else environ)[HOME_ENV] = str(self.root)

    # ---- caches of the offline pipeline ----
    @property
    def circuits(self) -> Path:
        """Compiled circuit packages, one directory each (``<name>-<cache key>``)."""
        return self.root / "circuits"

    @property
    def srs(self) -> Path:
        """Structured reference strings, by logrows."""
        return self.root / "srs"

    @property
    def contracts(self) -> Path:
        """The project's own contracts compiled by solc-js, by source hash."""
        return self.root / "contracts"

    # ---- serving ----
    @property
    def proofs(self) -> Path:
        """The proof store of the serving app."""
        return self.root / "proofs"

    @property
    def keys_file(self) -> Path:
        """Default location of the API keys file."""
        return self.root / "keys.yaml"

    # ---- verifier and chain ----
    @property
    def verifier(self) -> Path:
        return self.root / "verifier"

    @property
    def outbox(self) -> Path:
        """The verifier's durable SQLite outbox."""
        return self.verifier / "outbox.sqlite"

    @property
    def chain(self) -> Path:
        return self.root / "chain"

    @property
    def anvil_state(self) -> Path:
        """The local anvil's state file (loaded at start, dumped periodically and on exit)."""
        return self.chain / "anvil-state.json"

    @property
    def deployments(self) -> Path:
        """Addresses of the contracts deployed on each chain."""
        return self.chain / "deployments.json"

    # ---- a running stack ----
    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def resolved_config(self) -> Path:
        """The settings `zkserve up` runs with, handed to its children."""
        return self.run / "config.yaml"

    @property
    def ray_address(self) -> Path:
        """The Ray cluster `zkserve up` serves on, for `zkserve models` to join."""
        return self.run / "ray-address"

    @property
    def logs(self) -> Path:
        """Logs of everything a normal run keeps off the terminal (Ray, EZKL, the verifier, anvil)."""
        return self.root / "logs"

    @property
    def verifier_log(self) -> Path:
        return self.logs / "verifier.log"

    @property
    def anvil_log(self) -> Path:
        return self.logs / "anvil.log"

    @property
    def ray_logs(self) -> Path:
        return self.logs / "ray"


def state_paths() -> StatePaths:
    """This process's state paths (``$ZKSERVE_HOME`` else ``./.zkserve``), root created."""
    return StatePaths.resolve().ensure()


def state_dir() -> Path:
    """The state directory (see ``StatePaths.resolve``); created on first use."""
    return state_paths().root
