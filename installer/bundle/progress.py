"""A rich progress bar for byte-counted work (bytes, rate, ETA) on stderr, thread-safe."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


class _BarSink:
    """Adapts hashing progress callbacks (from many threads) to one rich task."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress = progress
        self._task = task

    def start(self, total_bytes: int) -> None:
        self._progress.update(self._task, total=total_bytes)

    def advance(self, nbytes: int) -> None:
        self._progress.advance(self._task, nbytes)


@contextmanager
def byte_progress(console: Console, label: str, *, enabled: bool) -> Iterator[_BarSink | None]:
    """Yield a progress sink, or None when disabled (not a TTY, or machine output)."""
    if not enabled:
        yield None
        return
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    with progress:
        yield _BarSink(progress, progress.add_task(label, total=None))
