"""Getting a circuit package to Ray workers on any node of the cluster: by model_id through
the object store and a node-local cache (circuits.transport), never by the driver's paths."""

from __future__ import annotations

from circuits.transport import PackageRef as PackageSource

__all__ = ["PackageSource"]
