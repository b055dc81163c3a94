"""The input domain of a circuit (minimal stand-in of the CONTRACTS.md interface).

Written by the scale helper so that scoring can code against the interface before the
circuits branch lands; the circuits branch's module replaces this file on merge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np


class DomainError(ValueError):
    """A domain specification that cannot be used."""


@dataclass(frozen=True)
class DomainViolation:
    input: str
    row: int
    feature: int  # index into the row flattened row-major
    value: float
    low: float
    high: float
    model: str = ""

    def message(self) -> str:
        of_model = f" of model {self.model}" if self.model else ""
        return (f"input {self.input!r} feature {self.feature} of row {self.row} is {self.value:.6g}, outside the "
                f"proven domain [{self.low:.6g}, {self.high:.6g}]{of_model}; attested rows must lie inside it "
                f"(attest=none is not limited)")


@dataclass(frozen=True)
class InputRange:
    low: np.ndarray
    high: np.ndarray
    source: str
    margin: float


@dataclass(frozen=True)
class InputDomain:
    model: str
    ranges: Mapping[str, InputRange]

    @classmethod
    def from_manifest(cls, manifest: dict) -> "InputDomain":
        entries = manifest.get("input_domain")
        if not isinstance(entries, dict) or not entries:
            raise DomainError(f"manifest of {manifest.get('name', '?')} records no input_domain")
        ranges = {name: InputRange(np.asarray(entry["low"], dtype=np.float64), np.asarray(entry["high"], np.float64),
                                   entry.get("source", "explicit"), float(entry.get("margin", 0.0)))
                  for name, entry in entries.items()}
        return cls(manifest.get("name", ""), ranges)

    def violation(self, name: str, rows: np.ndarray) -> DomainViolation | None:
        """The first value of `rows` (shaped [n, *row_shape]) outside [low, high]; NaN counts as outside."""
        bounds = self.ranges.get(name)
        if bounds is None:
            raise DomainError(f"model {self.model} has no input named {name!r}")
        if not len(rows):
            return None
        flat = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
        outside = ~((flat >= bounds.low) & (flat <= bounds.high))
        if not outside.any():
            return None
        row, feature = (int(i) for i in np.argwhere(outside)[0])
        return DomainViolation(name, row, feature, float(flat[row, feature]), float(bounds.low[feature]),
                               float(bounds.high[feature]), self.model)
