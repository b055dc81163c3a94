"""The input domain a circuit is proven accurate on (CONTRACTS.md interface).

Minimal local version for the serving branch: reads ``manifest["input_domain"]`` when present and
otherwise allows everything. The circuits branch owns the full implementation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class DomainViolation:
    input: str
    row: int
    feature: int
    value: float
    low: float
    high: float
    model: str = ""

    def message(self) -> str:
        of_model = f" of model {self.model}" if self.model else ""
        return (f"input {self.input!r} feature {self.feature} of row {self.row} is {self.value}, outside the proven "
                f"domain [{self.low}, {self.high}]{of_model}; attested rows must lie inside it (attest=none is not "
                f"limited)")


@dataclass(frozen=True)
class InputDomain:
    bounds: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    model: str = ""

    @classmethod
    def from_manifest(cls, manifest: dict) -> "InputDomain":
        bounds = {name: (np.asarray(entry["low"], dtype=np.float64), np.asarray(entry["high"], dtype=np.float64))
                  for name, entry in (manifest.get("input_domain") or {}).items()}
        return cls(bounds, str(manifest.get("name", "")))

    def violation(self, name: str, rows: np.ndarray) -> DomainViolation | None:
        if name not in self.bounds:
            return None
        low, high = self.bounds[name]
        flat = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
        outside = ~((flat >= low) & (flat <= high))  # NaN compares false: outside
        if not outside.any():
            return None
        row, feature = (int(i) for i in np.argwhere(outside)[0])
        return DomainViolation(name, row, feature, float(flat[row, feature]), float(low[feature]), float(high[feature]),
                               self.model)
