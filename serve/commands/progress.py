"""Progress display for multi-stage work (compilation), shared by CLI commands."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from circuits.compile import STAGES

console = Console(stderr=True, soft_wrap=True)  # messages stay on one line, greppable


@contextlib.contextmanager
def stage_progress(title: str) -> Iterator:
    """Yields an `on_stage(name)` callback that advances a bar over the compile stages."""
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[stage]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(title, total=len(STAGES), stage="")
        seen: list[str] = []

        def on_stage(name: str) -> None:
            if seen:
                progress.advance(task)
            seen.append(name)
            progress.update(task, stage=name)

        yield on_stage
        progress.update(task, completed=len(STAGES), stage="done")
