"""Refusing attested rows outside the circuit's proven input domain, before anything is proven.

The domain is the package's (circuits.domain, recorded by `compile`); a row outside it
becomes an errors.csv entry at stage `domain` whose reason names the input, the feature
index, the value and the domain. A package compiled before domains were recorded has none,
and its rows are not screened.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from circuits import CircuitPackage
from serve.scoring.inputs import InputChunk, RowError

DomainCheck = Callable[[np.ndarray, np.ndarray, "np.ndarray | None"], tuple[np.ndarray, list[RowError]]]


def domain_check(package: CircuitPackage) -> DomainCheck | None:
    if "input_domain" not in package.manifest:
        return None
    from circuits.domain import InputDomain

    domain = InputDomain.from_manifest(package.manifest)
    name = package.inputs[0]["name"]

    def check(row_ids: np.ndarray, values: np.ndarray, lines: np.ndarray | None) -> tuple[np.ndarray, list[RowError]]:
        """(mask of the rows inside, an error per row outside): one vectorized check per chunk."""
        bounds = domain.ranges.get(name)
        flat = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
        if bounds is None or (len(flat) and flat.shape[1] != bounds.low.size):
            domain.violation(name, values)  # raises the DomainError that names the mismatch
        # "not inside" so that NaN, which compares False with everything, is outside (as domain.violation)
        keep = ((flat >= bounds.low) & (flat <= bounds.high)).all(axis=1) if len(flat) else np.ones(0, bool)
        refused: list[RowError] = []
        for index in np.flatnonzero(~keep):  # the message of each refused row, from the domain itself
            found = domain.violation(name, values[index:index + 1])
            row_id = int(row_ids[index])
            message = dataclasses.replace(found, row=row_id).message()
            refused.append(RowError(row_id, message, int(lines[index]) if lines is not None else None, "domain"))
        return keep, refused

    return check


def screen_chunk(check: DomainCheck | None, chunk: InputChunk) -> tuple[np.ndarray, np.ndarray, np.ndarray | None,
                                                                         list[RowError]]:
    """(row ids, values, lines, errors) of the rows to score in `chunk`, errors sorted by row id."""
    if check is None:
        return chunk.row_ids, chunk.values, chunk.lines, list(chunk.errors)
    keep, refused = check(chunk.row_ids, chunk.values, chunk.lines)
    errors = sorted(list(chunk.errors) + refused, key=lambda error: error.row_id)
    lines = chunk.lines[keep] if chunk.lines is not None else None
    return chunk.row_ids[keep], chunk.values[keep], lines, errors
