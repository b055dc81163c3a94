"""Getting a circuit package to Ray workers on any node of the cluster.

The driver puts the package's files in the object store once; a worker uses the package
directory in place when its node has it (one machine, shared disk) and otherwise writes
the files to a local cache directory keyed by model_id.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import ray

from circuits import CircuitPackage, PackageError
from circuits.package import MANIFEST


@dataclass(frozen=True)
class PackageSource:
    root: str
    model_id: str
    files: ray.ObjectRef  # dict file name -> bytes

    @classmethod
    def publish(cls, package: CircuitPackage) -> PackageSource:
        names = [MANIFEST, *package.manifest["files"]]
        files = {name: (package.root / name).read_bytes() for name in names}
        return cls(str(package.root), package.model_id, ray.put(files))

    def load(self) -> CircuitPackage:
        in_place = self._try_load(Path(self.root))
        return in_place or self._materialize()

    def _try_load(self, root: Path) -> CircuitPackage | None:
        if not (root / MANIFEST).is_file():
            return None
        try:
            package = CircuitPackage.load(root)
        except PackageError:
            return None
        return package if package.model_id == self.model_id else None

    def _materialize(self) -> CircuitPackage:
        target = Path(tempfile.gettempdir()) / "zkserve-packages" / self.model_id[2:18]
        cached = self._try_load(target)
        if cached:
            return cached
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        for name, data in ray.get(self.files).items():
            (staging / name).write_bytes(data)
        shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(staging, target)  # another worker on this node may have won the race
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
        return CircuitPackage.load(target)
