"""The live progress bar of a run on a TTY: items, rate, throttles, ETA, on one line whatever
the terminal's width (a line that wraps breaks a live display: narrow terminals get the
short form)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from .aws import Caller

WIDE = 110  # columns from which the long form fits with room for millions of items


def columns(width: int) -> list[ProgressColumn]:
    if width >= WIDE:
        return [
            TextColumn("[bold]items"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
            TextColumn("{task.fields[rate]:>7.1f}/s"),
            TextColumn("throttled {task.fields[throttled]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            TextColumn("{task.fields[phase]}"),
        ]
    return [
        BarColumn(bar_width=max(6, width - 66)), MofNCompleteColumn(), TaskProgressColumn(),
        TextColumn("{task.fields[rate]:>6.0f}/s"), TextColumn("thr {task.fields[throttled]}"),
        TextColumn("ETA"), TimeRemainingColumn(compact=True),
    ]


def phase_line(width: int) -> int:
    """Room for the phase on the bar's line (it goes last, and is cut, never wrapped)."""
    return max(0, width - (WIDE if width >= WIDE else 66))


class RunProgress:
    def __init__(self, total: int, caller: Caller, *, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.caller = caller
        self._progress = Progress(*columns(self.console.width), console=self.console,
                                  transient=False)
        self._task = self._progress.add_task("items", total=total, rate=0.0, throttled=0,
                                             phase="")

    def advance(self, n: int) -> None:
        throttled = sum(s.throttled for s in self.caller.stats.values())
        task = self._progress.tasks[self._task]
        self._progress.update(self._task, advance=n, rate=task.speed or 0.0, throttled=throttled)

    def phase(self, text: str) -> None:
        """What the work in flight is doing (``Phases.describe``), cut to the line."""
        room = phase_line(self.console.width)
        shown = text if len(text) <= room else text[:max(0, room - 1)] + "…"
        self._progress.update(self._task, phase=shown)

    def render(self) -> Any:
        return self._progress.get_renderable()

    def __enter__(self) -> RunProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.stop()
