"""Reading the rows to score from .npy, .csv or Parquet in bounded chunks, keeping every bad
row's number.

Nothing here holds the whole file: .npy is memory-mapped and sliced, CSV is streamed by
pyarrow's reader (record by record from the first irregular block on), Parquet is read batch
by batch. The driver's memory therefore depends on the chunk size, never on the row count.

A row that cannot be scored (wrong width, NaN or infinite values, a cell that is not a
number) becomes a RowError with its row number; it never stops the rows around it.
Row ids are 0-based positions of data rows in the file (a CSV header is not a row).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SUFFIXES = (".npy", ".csv", ".parquet", ".pq")
CHUNK_ROWS = 8192  # rows per chunk; part of a sampled job's plan, so fixed, not a tuning knob


class InputFileError(ValueError):
    """The file as a whole cannot be read (missing, unknown format, corrupt)."""


@dataclass(frozen=True)
class RowError:
    row_id: int
    reason: str
    line: int | None = None  # 1-based line in a CSV file
    stage: str = "input"


@dataclass
class InputChunk:
    """Consecutive data rows `first_row .. first_row + total - 1` of the file."""

    index: int
    first_row: int
    row_ids: np.ndarray  # int64, the rows that passed the checks, in file order
    values: np.ndarray  # float64, shape [len(row_ids), *row_shape]
    errors: list[RowError] = field(default_factory=list)
    total: int = 0  # data rows in the chunk, good and bad
    lines: np.ndarray | None = None  # CSV line of each good row


@dataclass
class InputRows:
    row_ids: np.ndarray
    values: np.ndarray
    errors: list[RowError]
    total: int


def iter_chunks(path: Path, row_shape: list[int], chunk_rows: int = CHUNK_ROWS) -> Iterator[InputChunk]:
    """The file's rows, `chunk_rows` data rows per chunk (the last may be shorter)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"input file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        blocks = _npy_blocks(path, chunk_rows)
    elif suffix == ".csv":
        blocks = _csv_blocks(path, chunk_rows)
    elif suffix in (".parquet", ".pq"):
        blocks = _parquet_blocks(path, chunk_rows)
    else:
        raise InputFileError(f"input {path.name}: unknown format {suffix!r}; use one of {', '.join(SUFFIXES)}")
    first = 0
    for index, (lines, block) in enumerate(blocks):
        chunk = _check_block(index, first, lines, block, row_shape)
        first += chunk.total
        yield chunk


def read_rows(path: Path, row_shape: list[int]) -> InputRows:
    """The whole file at once: for small files and tests only."""
    chunks = list(iter_chunks(path, row_shape))
    if not chunks:
        return InputRows(np.zeros(0, np.int64), np.zeros((0, *row_shape)), [], 0)
    return InputRows(np.concatenate([c.row_ids for c in chunks]), np.concatenate([c.values for c in chunks]),
                     [e for c in chunks for e in c.errors], sum(c.total for c in chunks))


# A block is (line numbers or None, rows): rows are either one float array [n, width] when
# every row converted cleanly, or a list whose items are a 1-d array or an error reason.
Block = tuple["list[int] | np.ndarray | None", "np.ndarray | list[np.ndarray | str]"]


def _npy_blocks(path: Path, chunk_rows: int) -> Iterator[Block]:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as error:
        raise InputFileError(f"input {path.name} is not a readable .npy array: {error}") from None
    if array.ndim == 0:
        raise InputFileError(f"input {path.name} holds a scalar, not rows")
    if not np.issubdtype(array.dtype, np.number):
        raise InputFileError(f"input {path.name} holds {array.dtype} values, not numbers")
    for start in range(0, len(array), chunk_rows):
        part = np.asarray(array[start:start + chunk_rows], dtype=np.float64)
        yield None, part.reshape(len(part), -1)


def _csv_blocks(path: Path, chunk_rows: int) -> Iterator[Block]:
    """pyarrow's streaming CSV reader while the file is regular (one width, every cell a number,
    no blank lines or quoted newlines, so line numbers follow from row numbers); from the first
    irregular block on, the record-by-record parser, which finds and names every bad row."""
    yielded = 0
    try:
        for lines, block in _arrow_csv_blocks(path, chunk_rows):
            yield lines, block
            yielded += len(block)
        return
    except _IrregularCsv:
        pass
    yield from _python_csv_blocks(path, chunk_rows, skip=yielded)


class _IrregularCsv(Exception):
    """The file needs the record-by-record parser from here on."""


def _arrow_csv_blocks(path: Path, chunk_rows: int) -> Iterator[Block]:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        first = next(reader, None)
        if not first or reader.line_num != 1 or all(not cell.strip() for cell in first):
            raise _IrregularCsv
    header = _is_header(first)
    names = [f"c{i}" for i in range(len(first))]
    try:
        stream = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=int(header), block_size=1 << 20,
                                           use_threads=False),  # threads read ahead without bound: memory
            parse_options=pacsv.ParseOptions(ignore_empty_lines=False),  # a blank line must not shift line numbers
            convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.float64()), null_values=[],
                                                 strings_can_be_null=False, quoted_strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, OSError):
        raise _IrregularCsv from None
    first_line = 2 if header else 1
    pending: list[np.ndarray] = []
    buffered = done = 0
    while True:
        try:
            batch = stream.read_next_batch()
        except StopIteration:
            break
        except (pa.ArrowInvalid, OSError):
            raise _IrregularCsv from None
        pending.append(np.column_stack([column.to_numpy() for column in batch.columns]) if batch.num_rows
                       else np.zeros((0, len(names))))
        buffered += batch.num_rows
        while buffered >= chunk_rows:
            rows = np.concatenate(pending) if len(pending) > 1 else pending[0]
            block, rest = rows[:chunk_rows], rows[chunk_rows:]
            pending, buffered = [rest], len(rest)
            yield np.arange(first_line + done, first_line + done + chunk_rows), block
            done += chunk_rows
    if buffered:
        rows = np.concatenate(pending)
        yield np.arange(first_line + done, first_line + done + len(rows)), rows


def _python_csv_blocks(path: Path, chunk_rows: int, skip: int = 0) -> Iterator[Block]:
    """`skip`: data rows already read by the fast reader."""
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        records: list[list[str]] = []
        lines: list[int] = []
        for record in reader:
            if not record or all(not cell.strip() for cell in record):
                continue  # blank lines are not rows
            if reader.line_num == 1 and _is_header(record):
                continue
            if skip:
                skip -= 1
                continue
            records.append(record)
            lines.append(reader.line_num)
            if len(records) == chunk_rows:
                yield lines, _convert(records)
                records, lines = [], []
        if records:
            yield lines, _convert(records)


def _convert(records: list[list[str]]) -> np.ndarray | list[np.ndarray | str]:
    try:  # the common case, all rows numeric and of one width: numpy parses the chunk at once
        return np.array(records, dtype=np.float64)
    except ValueError:
        return [_parse_cells(record) for record in records]


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


def _parquet_blocks(path: Path, chunk_rows: int) -> Iterator[Block]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises several types for a bad file
        raise InputFileError(f"input {path.name} is not a readable Parquet file: {error}") from None
    columns = [name for name in parquet.schema_arrow.names if name not in ("row_id", "id")]
    if not columns:
        raise InputFileError(f"input {path.name} has no feature columns")
    try:
        for batch in parquet.iter_batches(batch_size=chunk_rows, columns=columns):
            yield None, _parquet_batch(batch, columns)
    except (pa.ArrowInvalid, OSError) as error:
        raise InputFileError(f"input {path.name} is not a readable Parquet file: {error}") from None


def _parquet_batch(batch, columns: list[str]) -> np.ndarray | list[np.ndarray | str]:
    if len(columns) == 1:  # one list column holds each row's features
        cells = batch.column(0).to_pylist()
        return [_parquet_cell(cell) for cell in cells]
    if all(batch.column(i).null_count == 0 for i in range(len(columns))):
        try:
            return np.column_stack([batch.column(i).to_numpy(zero_copy_only=False).astype(np.float64)
                                    for i in range(len(columns))])
        except (TypeError, ValueError):
            pass
    data = [batch.column(i).to_pylist() for i in range(len(columns))]
    return [_parquet_cell([column[row] for column in data]) for row in range(batch.num_rows)]


def _parquet_cell(cell) -> np.ndarray | str:
    if cell is None:
        return "row is empty (null)"
    try:
        return np.asarray(cell, dtype=np.float64)
    except (TypeError, ValueError):
        return "a cell is missing (null) or not a number"


def _check_block(index: int, first: int, lines: list[int] | None, block, row_shape: list[int]) -> InputChunk:
    width = math.prod(row_shape)
    count = len(block)
    if isinstance(block, np.ndarray) and block.ndim == 2 and block.shape[1] == width:
        finite = np.isfinite(block).all(axis=1)
        good = np.flatnonzero(finite)
        errors = [RowError(first + int(i), "holds NaN or infinite values",
                           int(lines[i]) if lines is not None else None)
                  for i in np.flatnonzero(~finite)]
        return InputChunk(index, first, (first + good).astype(np.int64), block[good].reshape(len(good), *row_shape),
                          errors, count, np.asarray(lines)[good] if lines is not None else None)
    if isinstance(block, np.ndarray):  # uniform but of the wrong width
        block = list(block)
    good_ids, good_values, errors = [], [], []
    for offset, values in enumerate(block):
        reason = values if isinstance(values, str) else _problem(values, width)
        if reason:
            errors.append(RowError(first + offset, reason, int(lines[offset]) if lines is not None else None))
            continue
        good_ids.append(first + offset)
        good_values.append(np.asarray(values, dtype=np.float64).reshape(row_shape))
    values = np.stack(good_values) if good_values else np.zeros((0, *row_shape))
    good_lines = (np.asarray([lines[i - first] for i in good_ids], dtype=np.int64)
                  if lines is not None else None)
    return InputChunk(index, first, np.asarray(good_ids, dtype=np.int64), values, errors, count, good_lines)


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
