"""The zkserve Ray Serve application: ingress, inference, provers and the proof service.

Imported lazily so ``serve.app.runtime`` and ``serve.app.models`` load without Ray Serve.
"""

from __future__ import annotations

__all__ = ["APP_NAME", "app_builder", "build_app", "start"]


def __getattr__(name: str):
    if name in __all__:
        from serve.app import builder

        return getattr(builder, name)
    raise AttributeError(name)
