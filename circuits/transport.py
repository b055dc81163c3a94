"""A circuit package that travels by model_id, for clusters without a shared disk.

Whoever holds the package packs it once (`pack_package`: a tar of the files the manifest
lists, as bytes, e.g. for `ray.put`); a process on any node turns those bytes back into a
package in a node-local cache keyed by model_id (`materialize`): a private directory (0700),
filled in a staging directory and renamed into place atomically, and loaded through
`CircuitPackage.load`, which checks every file against the manifest and the key against the
model id before use. Nothing ever reads the packer's paths.

The cache directory is $ZKSERVE_PACKAGE_CACHE when set (per node: set it in the raylet's
environment), else `zkserve-packages-<uid>` under the system temp dir.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from circuits.package import MANIFEST, CircuitPackage, PackageError

CACHE_ENV = "ZKSERVE_PACKAGE_CACHE"
MAX_PACKAGE_BYTES = 2 << 30  # a packed package larger than this is refused before unpacking


def cache_dir() -> Path:
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path(tempfile.gettempdir()) / f"zkserve-packages-{os.getuid()}"


def pack_package(package: CircuitPackage) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name in (MANIFEST, *package.manifest["files"]):
            archive.add(package.root / name, arcname=name, recursive=False)
    return buffer.getvalue()


def materialize(model_id: str, packed: bytes, root: Path | None = None) -> CircuitPackage:
    """The package `model_id` in this node's cache, unpacked from `packed` when not cached yet."""
    if len(packed) > MAX_PACKAGE_BYTES:
        raise PackageError(f"packed package of {model_id} is {len(packed)} bytes, more than {MAX_PACKAGE_BYTES}")
    base = Path(root) if root else cache_dir()
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(base, 0o700)
    target = base / model_id.removeprefix("0x")
    cached = _load(target, model_id)
    if cached:
        return cached
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name[:16]}-", dir=base))  # 0700 by mkdtemp
    try:
        with tarfile.open(fileobj=io.BytesIO(packed), mode="r") as archive:
            for member in archive.getmembers():
                if not member.isfile() or Path(member.name).name != member.name:
                    raise PackageError(f"packed package of {model_id}: unexpected entry {member.name!r}")
            archive.extractall(staging, filter="data")
        package = CircuitPackage.load(staging)  # integrity before the package becomes visible
        if package.model_id != model_id:
            raise PackageError(f"packed package claims model_id {package.model_id}, expected {model_id}")
        shutil.rmtree(target, ignore_errors=True)  # a broken earlier copy
        try:
            os.replace(staging, target)
        except OSError:  # another process on this node won the race; its copy is checked below
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    loaded = _load(target, model_id)
    if loaded is None:
        raise PackageError(f"package {model_id} could not be materialised under {base}")
    return loaded


def _load(target: Path, model_id: str) -> CircuitPackage | None:
    if not (target / MANIFEST).is_file():
        return None
    try:
        package = CircuitPackage.load(target)
    except PackageError:
        return None
    return package if package.model_id == model_id else None


class PackageRef:
    """A package put once into the Ray object store; any actor on any node calls `.load()`.

    The object is owned by the process that published it (the driver, the app's builder) and
    lives as long as that process does."""

    _loaded: dict[tuple[str, str], CircuitPackage] = {}  # per process: (cache dir, model_id) -> checked package

    def __init__(self, model_id: str, packed_ref):
        self.model_id = model_id
        self.packed = packed_ref  # ray.ObjectRef of pack_package's bytes

    def __repr__(self) -> str:
        return f"PackageRef({self.model_id})"

    @classmethod
    def publish(cls, package: CircuitPackage) -> PackageRef:
        import ray

        return cls(package.model_id, ray.put(pack_package(package)))

    def load(self) -> CircuitPackage:
        """The package from this node's cache, fetched from the object store when not there yet;
        checked against the manifest once per process."""
        key = (str(cache_dir()), self.model_id)
        known = self._loaded.get(key)
        if known is not None and (known.root / MANIFEST).is_file():
            return known
        cached = _load(cache_dir() / self.model_id.removeprefix("0x"), self.model_id)
        # .future().result() rather than ray.get: a Serve replica is an asyncio actor, where ray.get
        # logs a warning; blocking is right here (once per process, before it takes any work)
        package = cached or materialize(self.model_id, self.packed.future().result())
        self._loaded[key] = package
        return package
