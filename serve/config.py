"""Compatibility: the config as the plain dict document older callers read.

The configuration is typed in ``serve.settings`` (``load_settings``); this wrapper returns
the same settings as a document, Ray Serve's keys untouched and the resolved ``zkserve``
section as plain data (``Settings.document()``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from serve.settings import ConfigError, Settings, load_settings

__all__ = ["ConfigError", "DEFAULTS", "load_config"]

# The defaults as data, for readers that want to list them (see serve.settings for each key's meaning).
DEFAULTS: dict[str, Any] = Settings().model_dump(mode="json")


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Returns the full document (Ray Serve keys untouched) with a resolved ``zkserve`` section."""
    return load_settings(path, environ).document()
