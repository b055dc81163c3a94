"""Reading the rows to score from .npy, .csv or Parquet, keeping every bad row's number.

A row that cannot be scored (wrong width, NaN or infinite values, a cell that is not a
number) becomes a RowError with its row number; it never stops the rows around it.
Row ids are 0-based positions of data rows in the file (a CSV header is not a row).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SUFFIXES = (".npy", ".csv", ".parquet", ".pq")


class InputFileError(ValueError):
    """The file as a whole cannot be read (missing, unknown format, corrupt)."""


@dataclass(frozen=True)
class RowError:
    row_id: int
    reason: str
    line: int | None = None  # 1-based line in a CSV file
    stage: str = "input"


@dataclass
class InputRows:
    row_ids: np.ndarray  # int64, the rows that passed the checks, in file order
    values: np.ndarray  # float64, shape [len(row_ids), *row_shape]
    errors: list[RowError]
    total: int  # data rows in the file, good and bad


def read_rows(path: Path, row_shape: list[int]) -> InputRows:
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"input file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _check_rows(_npy_rows(path), row_shape)
    if suffix == ".csv":
        return _check_rows(_csv_rows(path), row_shape)
    if suffix in (".parquet", ".pq"):
        return _check_rows(_parquet_rows(path), row_shape)
    raise InputFileError(f"input {path.name}: unknown format {suffix!r}; use one of {', '.join(SUFFIXES)}")


# Each reader yields (row_id, line or None, values or an error reason).
def _npy_rows(path: Path):
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise InputFileError(f"input {path.name} is not a readable .npy array: {error}") from None
    if array.ndim == 0:
        raise InputFileError(f"input {path.name} holds a scalar, not rows")
    for row_id, row in enumerate(array):
        yield row_id, None, row


def _csv_rows(path: Path):
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        row_id = 0
        for record in reader:
            if not record or all(not cell.strip() for cell in record):
                continue  # blank lines are not rows
            if reader.line_num == 1 and _is_header(record):
                continue
            yield row_id, reader.line_num, _parse_cells(record)
            row_id += 1


def _is_header(record: list[str]) -> bool:
    # all cells non-numeric: a first data row with one bad cell is still a row (and an error)
    return all(_number(cell.strip()) is None for cell in record)


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _parse_cells(record: list[str]) -> np.ndarray | str:
    values = []
    for column, cell in enumerate(record, start=1):
        number = _number(cell.strip())
        if number is None:
            return f"column {column}: {cell.strip()[:40]!r} is not a number"
        values.append(number)
    return np.asarray(values)


def _parquet_rows(path: Path):
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises several types for a bad file
        raise InputFileError(f"input {path.name} is not a readable Parquet file: {error}") from None
    columns = [name for name in table.column_names if name not in ("row_id", "id")]
    if not columns:
        raise InputFileError(f"input {path.name} has no feature columns")
    data = {name: table.column(name).to_pylist() for name in columns}
    if len(columns) == 1:  # one list column holds each row's features
        for row_id, cell in enumerate(data[columns[0]]):
            yield row_id, None, _parquet_cell(cell)
        return
    for row_id in range(table.num_rows):  # one scalar column per feature
        yield row_id, None, _parquet_cell([data[name][row_id] for name in columns])


def _parquet_cell(cell) -> np.ndarray | str:
    if cell is None:
        return "row is empty (null)"
    try:
        return np.asarray(cell, dtype=np.float64)
    except (TypeError, ValueError):
        return "a cell is missing (null) or not a number"


def _check_rows(rows, row_shape: list[int]) -> InputRows:
    width = math.prod(row_shape)
    good_ids, good_values, errors, total = [], [], [], 0
    for row_id, line, values in rows:
        total += 1
        reason = values if isinstance(values, str) else _problem(values, width)
        if reason:
            errors.append(RowError(row_id, reason, line))
            continue
        good_ids.append(row_id)
        good_values.append(np.asarray(values, dtype=np.float64).reshape(row_shape))
    values = np.stack(good_values) if good_values else np.zeros((0, *row_shape))
    return InputRows(np.asarray(good_ids, dtype=np.int64), values, errors, total)


def _problem(values: np.ndarray, width: int) -> str | None:
    try:
        values = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return "not numeric"
    if values.size != width:
        return f"wrong width: {values.size} values, the model takes {width}"
    if not np.isfinite(values).all():
        return "holds NaN or infinite values"
    return None
