"""A progress bar for scoring: rows done of the total, rows/s and proofs/s of this run."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class ScoringProgress:
    def __init__(self, progress: Progress | None, task, already_done: int):
        self._progress, self._task = progress, task
        self._start = time.monotonic()
        self._base = already_done
        self.rows = 0
        self.proofs = 0
        self._first: tuple[float, int] | None = None  # (time, rows) at the first result

    def advance(self, rows: int, proofs: int) -> None:
        if self._first is None:
            self._first = (time.monotonic(), rows)
        self._last = time.monotonic()
        self.rows += rows
        self.proofs += proofs
        if self._progress is not None:
            elapsed = max(time.monotonic() - self._start, 1e-9)
            self._progress.update(self._task, completed=self._base + self.rows,
                                  rates=f"{self.rows / elapsed:.1f} rows/s  {self.proofs / elapsed:.2f} proofs/s")

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self._start

    @property
    def steady_rows_per_s(self) -> float:
        """Rows/s from the first result to the last: the rate once workers are up."""
        if self._first is None or self._last <= self._first[0]:
            return 0.0
        return (self.rows - self._first[1]) / (self._last - self._first[0])


@contextlib.contextmanager
def scoring_progress(
    total: int, already_done: int, show: bool, console: Console | None = None
) -> Iterator[ScoringProgress]:
    if not show:
        yield ScoringProgress(None, None, already_done)
        return
    columns = (
        TextColumn("[bold]scoring"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows"),
        TextColumn("{task.fields[rates]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console or Console(stderr=True)) as progress:
        task = progress.add_task("scoring", total=total, completed=already_done, rates="starting workers")
        yield ScoringProgress(progress, task, already_done)
