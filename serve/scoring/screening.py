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
        """(mask of the rows inside, an error per row outside); a clean chunk costs one vectorized check."""
        keep = np.ones(len(row_ids), dtype=bool)
        refused: list[RowError] = []

        def visit(low: int, high: int) -> None:  # bisect: O(bad rows x log n) checks, never one per row
            found = domain.violation(name, values[low:high])
            if found is None:
                return
            if high - low == 1:
                keep[low] = False
                row_id = int(row_ids[low])
                message = dataclasses.replace(found, row=row_id).message()
                refused.append(RowError(row_id, message, int(lines[low]) if lines is not None else None, "domain"))
                return
            middle = (low + high) // 2
            visit(low, middle)
            visit(middle, high)

        if len(row_ids):
            visit(0, len(row_ids))
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
