"""The input domain of a circuit: the per-feature box its outputs are proven accurate on.

A circuit quantizes its inputs and sizes its lookup tables for the values it was calibrated
on; outside them its outputs can silently differ from the model's (the proof stays valid,
of other outputs). So the domain is part of the package: `compile` records it in the
manifest under "input_domain", checks the circuit on the domain's corners and random points,
and whoever proves refuses attested rows outside it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_MARGIN = 0.1  # calibration domains are widened by 10% of each feature's span on both sides
SOURCES = ("calibration", "explicit")


class DomainError(ValueError):
    """A domain specification that cannot be used (bad range, wrong shape, unknown input)."""


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
    """One input's domain: low/high per feature of a row, flattened row-major."""

    low: np.ndarray
    high: np.ndarray
    source: str
    margin: float

    def to_manifest(self) -> dict:
        return {"low": [float(v) for v in self.low], "high": [float(v) for v in self.high],
                "source": self.source, "margin": float(self.margin)}


@dataclass(frozen=True)
class InputDomain:
    model: str
    ranges: Mapping[str, InputRange]

    @classmethod
    def from_manifest(cls, manifest: dict) -> InputDomain:
        entries = manifest.get("input_domain")
        if not isinstance(entries, dict) or not entries:
            raise DomainError(f"manifest of {manifest.get('name', '?')} records no input_domain; recompile the "
                              f"model with this zkserve")
        ranges = {}
        for name, entry in entries.items():
            low = np.asarray(entry["low"], dtype=np.float64)
            high = np.asarray(entry["high"], dtype=np.float64)
            ranges[name] = InputRange(low, high, entry.get("source", "explicit"), float(entry.get("margin", 0.0)))
        return cls(manifest.get("name", ""), ranges)

    def to_manifest(self) -> dict:
        return {name: r.to_manifest() for name, r in self.ranges.items()}

    def violation(self, name: str, rows: np.ndarray) -> DomainViolation | None:
        """The first value of `rows` (shaped [n, *row_shape]) outside [low, high]; NaN counts as outside."""
        bounds = self.ranges.get(name)
        if bounds is None:
            raise DomainError(f"model {self.model} has no input named {name!r}")
        flat = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1) if len(rows) else np.zeros((0, 0))
        if flat.shape[1:] and flat.shape[1] != bounds.low.size:
            raise DomainError(f"input {name!r}: rows have {flat.shape[1]} features, the domain {bounds.low.size}")
        # "inside" compares False for NaN, which is therefore outside
        inside = (flat >= bounds.low) & (flat <= bounds.high)
        if inside.all():
            return None
        row, feature = (int(i) for i in np.argwhere(~inside)[0])
        return DomainViolation(name, row, feature, float(flat[row, feature]), float(bounds.low[feature]),
                               float(bounds.high[feature]), self.model)

    def check(self, arrays: Mapping[str, np.ndarray]) -> DomainViolation | None:
        """The first violation over several inputs (by name), or None."""
        for name, rows in arrays.items():
            found = self.violation(name, rows)
            if found is not None:
                return found
        return None

    def describe(self) -> str:
        parts = []
        for name, r in self.ranges.items():
            parts.append(f"{name}: [{float(r.low.min()):.4g}, {float(r.high.max()):.4g}] ({r.source}"
                         + (f", margin {r.margin:g})" if r.source == "calibration" else ")"))
        return "; ".join(parts)


# --- building a domain at compile time -----------------------------------------------------

def from_calibration(names: list[str], arrays: list[np.ndarray], margin: float = DEFAULT_MARGIN) -> dict:
    """Per-feature [min, max] of the calibration rows, widened by `margin` x span on each side.

    A feature constant over the calibration rows has no span; it is widened by `margin` x
    max(|value|, 1) so that the domain is never a single point by accident."""
    if not margin >= 0 or not math.isfinite(margin):
        raise DomainError(f"domain margin must be a finite number >= 0, not {margin}")
    ranges = {}
    for name, array in zip(names, arrays, strict=False):
        flat = np.asarray(array, dtype=np.float64).reshape(len(array), -1)
        if not np.isfinite(flat).all():
            raise DomainError(f"calibration rows of input {name!r} hold NaN or infinite values")
        low, high = flat.min(axis=0), flat.max(axis=0)
        span = high - low
        widen = margin * np.where(span > 0, span, np.maximum(np.abs(low), 1.0))
        ranges[name] = InputRange(low - widen, high + widen, "calibration", margin)
    return ranges


def explicit(names: list[str], sizes: list[int], spec: Mapping[str, tuple]) -> dict:
    """Explicit bounds, by input name: (low, high) as scalars or per-feature sequences."""
    unknown = set(spec) - set(names)
    if unknown:
        raise DomainError(f"input range given for unknown input(s) {', '.join(sorted(unknown))}; "
                          f"the model's inputs are {', '.join(names)}")
    missing = [n for n in names if n not in spec]
    if missing:
        raise DomainError(f"no input range for input(s) {', '.join(missing)}")
    ranges = {}
    for name, size in zip(names, sizes, strict=False):
        low, high = (_per_feature(name, value, size) for value in spec[name])
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise DomainError(f"input range of {name!r} must be finite")
        if (low > high).any():
            feature = int(np.argmax(low > high))
            raise DomainError(f"input range of {name!r}: feature {feature} has low {low[feature]} > "
                              f"high {high[feature]}")
        ranges[name] = InputRange(low, high, "explicit", 0.0)
    return ranges


def _per_feature(name: str, value, size: int) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise DomainError(f"input range of {name!r} must be numbers, not {value!r}") from None
    if array.size == 1:
        return np.full(size, array[0])
    if array.size == size:
        return array
    raise DomainError(f"input range of {name!r} has {array.size} values; give one or {size} (one per feature)")


def parse_range(text: str) -> tuple[float, float]:
    """`LO:HI` as given to `--input-range`."""
    try:
        low, high = (float(part) for part in text.split(":"))
    except ValueError:
        raise DomainError(f"--input-range wants LO:HI (e.g. -1.5:1.5), not {text!r}") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise DomainError(f"--input-range {text!r}: need finite LO <= HI")
    return low, high


MAX_RANGES_FILE = 64 << 20  # bytes; a ranges file is two numbers per feature


def load_ranges_file(path: Path, names: list[str]) -> dict[str, tuple]:
    """Per-feature ranges from a file: JSON {"input": {"low": [...], "high": [...]}} (or just
    {"low": ..., "high": ...} for a one-input model), or .npy shaped [2, *row_shape] (low, high)."""
    path = Path(path)
    if not path.is_file():
        raise DomainError(f"input ranges file {path} does not exist")
    if path.stat().st_size > MAX_RANGES_FILE:
        raise DomainError(f"input ranges file {path} is larger than {MAX_RANGES_FILE >> 20} MiB")
    if path.suffix == ".npy":
        if len(names) != 1:
            raise DomainError(f"the model has {len(names)} inputs: give ranges as JSON keyed by input name")
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as error:
            raise DomainError(f"{path} is not a readable .npy array: {error}") from None
        if array.ndim < 1 or array.shape[0] != 2:
            raise DomainError(f"{path}: a ranges .npy is shaped [2, *row_shape] (low, high), not {list(array.shape)}")
        return {names[0]: (array[0], array[1])}
    try:
        document = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise DomainError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise DomainError(f"{path}: expected a JSON object of input ranges")
    if set(document) == {"low", "high"} and len(names) == 1:
        document = {names[0]: document}
    spec = {}
    for name, entry in document.items():
        if not isinstance(entry, dict) or set(entry) != {"low", "high"}:
            raise DomainError(f"{path}: input {name!r} wants {{\"low\": ..., \"high\": ...}}")
        spec[name] = (entry["low"], entry["high"])
    return spec


def sample(ranges: Mapping[str, InputRange], row_shapes: list[list[int]], corners: int, random: int,
           seed: int = 0) -> list[np.ndarray]:
    """Points of the domain to check the circuit on: the centre, corners (all when there are
    few, else a bounded random choice of them), and uniform random points; one array per input,
    the same number of rows each."""
    rng = np.random.default_rng(seed)
    bounds = list(ranges.values())
    sizes = [r.low.size for r in bounds]
    total = sum(sizes)
    low = np.concatenate([r.low for r in bounds])
    high = np.concatenate([r.high for r in bounds])
    if total <= math.log2(max(corners, 1)):
        bits = (np.arange(2 ** total)[:, None] >> np.arange(total)) & 1
    else:
        bits = rng.integers(0, 2, (corners, total))
        bits[0], bits[1 % len(bits)] = 0, 1  # the all-low and all-high corners always
    corner_points = np.where(bits == 1, high, low)
    random_points = rng.uniform(low, high, (random, total))
    points = np.concatenate([((low + high) / 2)[None], corner_points, random_points])
    arrays, offset = [], 0
    for size, shape in zip(sizes, row_shapes, strict=False):
        arrays.append(points[:, offset:offset + size].reshape(len(points), *shape))
        offset += size
    return arrays
