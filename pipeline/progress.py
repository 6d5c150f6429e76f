"""The live progress bar of a run on a TTY: items, rate, throttles, ETA."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from .aws import Caller


class RunProgress:
    def __init__(self, total: int, caller: Caller) -> None:
        self.console = Console(stderr=True)
        self.caller = caller
        self._progress = Progress(
            TextColumn("[bold]items"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]:>6.1f} items/s"),
            TextColumn("throttled {task.fields[throttled]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._task = self._progress.add_task("items", total=total, rate=0.0, throttled=0)

    def advance(self, n: int) -> None:
        throttled = sum(s.throttled for s in self.caller.stats.values())
        task = self._progress.tasks[self._task]
        self._progress.update(self._task, advance=n, rate=task.speed or 0.0, throttled=throttled)

    def __enter__(self) -> RunProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.stop()
