"""The write-ahead log's files: the one answers are appended to (``parts/wal.jsonl``), and
those a compaction set aside (``parts/wal-N.jsonl``, N the part it writes) until their part is
on disk. One line a batch: ``batch_id``, ``at``, and its ``results`` and ``failures`` as
columns of values (rows, in runs of an earlier version).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio
import orjson
from anyio.streams.memory import MemoryObjectReceiveStream

from .errors import DamagedRun
from .job import Item

CURRENT = "wal.jsonl"
T = TypeVar("T")


def aside_name(number: int) -> str:
    return f"wal-{number:06d}.jsonl"


def number_of(aside: Path) -> int:
    return int(aside.stem.removeprefix("wal-"))


def logs(directory: Path) -> list[Path]:
    """The log's files, oldest first: any set aside for a compaction that did not end, then
    the one answers are appended to."""
    aside = sorted(directory.glob("wal-*.jsonl"))
    current = directory / CURRENT
    return [*aside, current] if current.is_file() else aside


def read(directory: Path) -> list[dict[str, Any]]:
    """Every log's entries, in order."""
    return [entry for log in logs(directory) for entry in read_log(log)]


def read_log(log: Path) -> list[dict[str, Any]]:
    """A log file's entries. A torn last line is a batch whose answer was never acknowledged
    (a crash mid-write); a bad line before the last is damage."""
    lines = log.read_bytes().splitlines()
    entries = []
    for number, line in enumerate(lines, 1):
        try:
            entry = orjson.loads(line)
            entry["at"] = datetime.fromisoformat(entry["at"])
            if not isinstance(entry["results"], list | dict) or not isinstance(
                    entry["failures"], list | dict):
                raise TypeError("results and failures must be columns (or rows)")
        except (ValueError, KeyError, TypeError) as exc:
            if number == len(lines):
                continue
            raise DamagedRun(log, f"line {number} is not a journal entry "
                             f"({type(exc).__name__})") from exc
        entries.append(entry)
    return entries


def engine_columns(items: Sequence[Item], batch_id: str) -> dict[str, list[Any]]:
    """The engine's own columns of a batch's logged outcomes."""
    return {"item_key": [i.item_key for i in items],
            "instance_id": [i.instance_id for i in items],
            "input_row": [i.input_row for i in items],
            "batch_id": [batch_id] * len(items)}


def as_columns(logged: Any, names: list[str]) -> dict[str, list[Any]]:
    """A logged entry's values as columns: the log's columns, or rows as an earlier version
    logged them (a run killed then, resumed now). Raises ``ValueError`` when they do not fit
    ``names``."""
    if isinstance(logged, list):
        if any(not isinstance(row, list) or len(row) != len(names) for row in logged):
            raise ValueError("a row of the wrong width")
        logged = dict(zip(names, map(list, zip(*logged, strict=True)), strict=True)) \
            if logged else {}
    if not logged:
        return {}
    if not isinstance(logged, dict) or set(logged) != set(names):
        raise ValueError("not the run's columns")
    lengths = {len(v) if isinstance(v, list) else -1 for v in logged.values()}
    if len(lengths) != 1 or -1 in lengths:
        raise ValueError("columns of different lengths")
    return logged


class GroupCommit:
    """What one fsync of the log covers: what has arrived, and, while the run is busy (the
    process has used more than ``busy_share`` of a core over the last ``sample_s``), what
    arrives until ``interval_s`` after the last fsync. Each fsync costs 0.2-0.6 ms of CPU with
    its thread hand-offs: a busy run makes at most one an interval. A third of a core is a few
    hundred calls a second, where a fsync a batch costs a tenth of the CPU or more. A run that
    waits for its calls (as against AWS) uses little CPU, and syncs each batch as it comes: a
    batch holds its slot until its answer is durable, and a wait there would cost it calls."""

    def __init__(self, interval_s: float, busy_share: float = 0.3,
                 sample_s: float = 0.1) -> None:
        self.interval_s = interval_s
        self.busy_share = busy_share
        self.sample_s = sample_s
        self._synced_at = -math.inf
        self._sampled = (time.monotonic(), time.process_time())
        self._busy = False

    def busy(self) -> bool:
        """Whether the process used more than ``busy_share`` of a core lately."""
        now = time.monotonic()
        then, cpu_then = self._sampled
        if now - then >= self.sample_s and now > then:
            cpu = time.process_time()
            self._busy = (cpu - cpu_then) / (now - then) > self.busy_share
            self._sampled = (now, cpu)
        return self._busy

    async def gather(self, receive: MemoryObjectReceiveStream[T], first: T) -> list[T]:
        group = [first]
        wait = self._synced_at + self.interval_s - time.monotonic()
        with contextlib.suppress(anyio.EndOfStream):
            if wait > 0 and self.busy():
                with anyio.move_on_after(wait):
                    while True:
                        group.append(await receive.receive())
            with contextlib.suppress(anyio.WouldBlock):
                while True:
                    group.append(receive.receive_nowait())
        self._synced_at = time.monotonic()
        return group
