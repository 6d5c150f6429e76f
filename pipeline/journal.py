"""The journal: one writer task owns every write of outcomes.

Outcomes arrive batch by batch on a stream. The writer appends them at once to a write-ahead
log (``parts/wal.jsonl``, fsynced once for all that arrived together, and, while the process
uses more than a third of a core, at most once every 20 ms: ``wal.GroupCommit``), so an
answered call is never lost to a crash: at most the calls still in flight are made again. Every
``flush_rows`` rows or ``flush_s`` seconds it compacts what it holds into a part file
(``parts/results-N.parquet`` and/or ``parts/failures-N.parquet``, written aside then renamed):
the log is set aside first (renamed ``wal-N.jsonl``), the part is written beside the new log
while answers go on being logged, and the set-aside log is removed once the part is there; then
the checkpoint is rewritten. A renamed part is complete, so a resumed run counts every part on
disk, after compacting whatever the logs still hold.

The final files keep, for each item, its latest outcome (parts are numbered in order), so a
redriven item that succeeds leaves ``failures.parquet``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import orjson
import polars as pl
from anyio.streams.memory import MemoryObjectReceiveStream

from . import parts
from . import wal as wal_files
from .crashpoints import crashpoint
from .errors import DamagedRun
from .job import Answered, Failure, Outcome, Success, items_in
from .parts import TIMESTAMP
from .rundir import Appender, RunDir, atomic_write, utc_now, write_json

ENGINE_RESULT_SCHEMA: dict[str, Any] = {
    "instance_id": pl.String,
    "item_key": pl.String,
    "input_row": pl.Int64,
    "batch_id": pl.String,
    "attempts": pl.Int64,
    "completed_at": TIMESTAMP,
}
FAILURE_SCHEMA: dict[str, Any] = {
    "item_key": pl.String,
    "instance_id": pl.String,
    "input_row": pl.Int64,
    "error_code": pl.String,
    "error_message": pl.String,
    "http_status": pl.Int64,
    "retryable": pl.Boolean,
    "attempts": pl.Int64,
    "batch_id": pl.String,
    "failed_at": TIMESTAMP,
}


@dataclass(frozen=True, slots=True)
class Entry:
    """One batch's outcomes on their way to the writer; ``durable`` is set once they are
    fsynced, and the batch's task waits for it, so no more answers than the calls in flight
    are ever held only in memory."""

    batch_id: str
    outcomes: list[Outcome]
    durable: anyio.Event = field(default_factory=anyio.Event)


def result_schema(job_schema: Mapping[str, Any]) -> dict[str, Any]:
    return dict(job_schema) | {k: v for k, v in ENGINE_RESULT_SCHEMA.items() if k not in job_schema}


@dataclass(frozen=True, slots=True)
class _Compaction:
    """A part to write (``number``; None: nothing to write) from buffers set aside, and the
    logs that held them."""

    number: int | None
    results: parts.Buffered | None
    failures: parts.Buffered | None
    logs: list[Path]


class _Found(NamedTuple):
    """What ``check`` read: the checkpoint's call counters, the logs' entries."""

    calls: dict[str, dict[str, int]]
    entries: list[dict[str, Any]]


@dataclass(slots=True)
class Counts:
    succeeded: int = 0
    failed: int = 0


class Journal:
    def __init__(
        self,
        rundir: RunDir,
        job_schema: Mapping[str, Any],
        *,
        flush_rows: int = 20_000,
        flush_s: float = 2.0,
        commits: wal_files.GroupCommit | None = None,
    ) -> None:
        self.rundir = rundir
        self.schema = result_schema(job_schema)
        self.flush_rows = flush_rows
        self.flush_s = flush_s
        #: what one fsync of the log covers (at most one every 20 ms while busy)
        self.commits = commits or wal_files.GroupCommit(0.02)
        self.counts = Counts()
        self.calls: dict[str, dict[str, int]] = {}
        self._results = parts.Buffered(self.schema, "completed_at")
        self._failures = parts.Buffered(FAILURE_SCHEMA, "failed_at")
        # Past every part and every log set aside (a compaction a crash cut short): a log set
        # aside now never takes the name of one still to be replayed.
        self._next_part = 1 + max([n for _, n in self._parts()] + [
            wal_files.number_of(log) for log in self._logs() if log != self.wal],
            default=0)
        self._wal_lines: list[bytes] = []
        self._appender = Appender(self.wal)
        # The job's own columns (the engine's values win over a job's of the same name).
        self._job_columns = [c for c in self._results.logged if c not in ENGINE_RESULT_SCHEMA]
        self.redrive = False
        #: told when a write fails (disk full, read-only): the run must stop; nothing more is
        #: written, and what was not yet durable is not counted
        self.on_error: Callable[[OSError], None] | None = None
        self.broken: OSError | None = None
        self._uncounted = Counts()

    # -- reading what is on disk ------------------------------------------------------------

    def _parts(self) -> list[tuple[str, int]]:
        return parts.listed(self.rundir.parts)

    def latest(self) -> pl.DataFrame:
        """Per item ever written: its latest outcome (``ok``, ``retryable``, ``error_code``)."""
        return parts.latest(self.rundir.parts, self.schema, FAILURE_SCHEMA)

    @property
    def wal(self) -> Path:
        return Path(self.rundir.parts / wal_files.CURRENT)

    def _logs(self) -> list[Path]:
        return wal_files.logs(self.rundir.parts)

    def _replay_wal(self, entries: list[dict[str, Any]]) -> None:
        """Put what a crashed execution logged but never compacted back in the buffers."""
        for entry in entries:
            try:
                results = wal_files.as_columns(entry["results"], self._results.logged)
                failures = wal_files.as_columns(entry["failures"], self._failures.logged)
            except ValueError as exc:
                raise DamagedRun(self.wal, f"an entry of batch {entry.get('batch_id')} does "
                                 f"not fit the run's columns ({exc})") from exc
            self._buffer(results, failures, entry["at"])

    def check(self) -> _Found:
        """Raise ``DamagedRun`` for a file that cannot be trusted: the planned items, the
        checkpoint, a part it lists that is gone or unreadable, a log. Returns what it read
        (for ``load``, which reads nothing twice)."""
        if not self.rundir.items.is_file():
            raise DamagedRun(self.rundir.items, "missing (the run's planned items)")
        checkpoint: dict[str, Any] = {}
        if self.rundir.checkpoint.is_file():
            checkpoint = self.rundir.read_json(self.rundir.checkpoint)
            if not isinstance(checkpoint.get("calls", {}), dict):
                raise DamagedRun(self.rundir.checkpoint, "its calls are not an object")
        listed = list(checkpoint.get("parts", []))
        for name in listed:
            if not (self.rundir.parts / str(name)).is_file():
                raise DamagedRun(self.rundir.parts / str(name),
                                 "listed in checkpoint.json but missing: its items' outcomes "
                                 "are gone (restore the file, or remove it from the list to "
                                 "call them again)")
        entries = wal_files.read(self.rundir.parts)
        for kind, number in self._parts():
            path = self.rundir.parts / f"{kind}-{number:06d}.parquet"
            try:
                pl.read_parquet_schema(path)
            except (pl.exceptions.PolarsError, OSError) as exc:
                raise DamagedRun(path, f"not a readable Parquet part ({str(exc)[:120]})") \
                    from exc
        return _Found(checkpoint.get("calls", {}), entries)

    def load(self) -> pl.DataFrame:
        """Read the state left by earlier executions; returns ``latest()``."""
        found = self.check()
        self.calls = found.calls
        self._replay_wal(found.entries)
        # Compact what the logs held and remove them, always: a torn last line left in place
        # would swallow the first line appended after it.
        self.flush()
        latest = self.latest()
        self.counts.succeeded = int(latest["ok"].sum())
        self.counts.failed = latest.height - self.counts.succeeded
        return latest

    # -- writing ----------------------------------------------------------------------------

    def record(self, batch_id: str, outcomes: list[Outcome]) -> None:
        """Buffer a batch's outcomes, and log them as one line: a column of values each, the
        timestamp once (the log is on the hot path: a value is touched once, by a column's
        comprehension, and no row is made)."""
        now = utc_now()
        succeeded = [o for o in outcomes if isinstance(o, Success)]
        answered = [o for o in outcomes if isinstance(o, Answered)]
        failed = [o for o in outcomes if isinstance(o, Failure)]
        finished, failures_n = items_in(outcomes)
        if self.redrive:
            self._uncounted.failed -= finished  # failures, replaced by these outcomes
        self._uncounted.succeeded += finished - failures_n
        self._uncounted.failed += failures_n
        results = self._result_columns(succeeded, answered, batch_id) \
            if succeeded or answered else {}
        failures: dict[str, list[Any]] = {}
        if failed:
            failures = wal_files.engine_columns([o.item for o in failed], batch_id)
            errors = [o.error for o in failed]
            failures |= {
                "error_code": [e.code for e in errors],
                "error_message": [e.message for e in errors],
                "http_status": [e.http_status for e in errors],
                "retryable": [e.retryable for e in errors],
                "attempts": [e.attempts for e in errors],
            }
        self._wal_lines.append(orjson.dumps(
            {"batch_id": batch_id, "at": now.isoformat(), "results": results,
             "failures": failures}, option=orjson.OPT_APPEND_NEWLINE))
        self._buffer(results, failures, now)

    def _result_columns(self, succeeded: list[Success], answered: list[Answered],
                        batch_id: str) -> dict[str, list[Any]]:
        """The logged columns of a batch's successes: the rows' values a column at a time,
        then the columns of what was answered as columns."""
        rows = [o.row for o in succeeded]
        items = [o.item for o in succeeded]
        attempts = [o.attempts for o in succeeded]
        for outcome in answered:
            items += outcome.items
            attempts += [outcome.attempts] * len(outcome.items)
            if any(len(v) != len(outcome.items) for v in outcome.columns.values()):
                raise ValueError(f"{batch_id}: an answer's columns are not one value an item")
        results: dict[str, list[Any]] = {}
        for column in self._job_columns:
            values = [row.get(column) for row in rows]
            for outcome in answered:
                values += outcome.columns.get(column) or [None] * len(outcome.items)
            results[column] = values
        return results | wal_files.engine_columns(items, batch_id) | {"attempts": attempts}

    def _buffer(self, results: Mapping[str, list[Any]], failures: Mapping[str, list[Any]],
                at: datetime) -> None:
        self._results.add(results, at)
        self._failures.add(failures, at)

    def sync_wal(self) -> None:
        """Make every outcome recorded so far durable (one fsync for all of them); only then
        are they counted."""
        if not self._wal_lines:
            return
        lines, self._wal_lines = self._wal_lines, []
        self._appender.append(b"".join(lines))
        self.counts.succeeded += self._uncounted.succeeded
        self.counts.failed += self._uncounted.failed
        self._uncounted = Counts()
        crashpoint("wal-synced")

    def _break(self, exc: OSError) -> None:
        """A write failed: stop writing; what was not durable is dropped, and its items stay
        pending for resume (their calls are made again, as for a crash)."""
        if self.broken is None:
            self.broken = exc
            if self.on_error is not None:
                self.on_error(exc)
        self._results.clear()
        self._failures.clear()
        self._wal_lines = []
        self._uncounted = Counts()
        self._appender.close()

    @property
    def buffered(self) -> int:
        return len(self._results) + len(self._failures)

    def flush(self, calls: Mapping[str, Mapping[str, int]] | None = None) -> None:
        """Compact everything logged so far into a part, here and now."""
        self._compact(self._set_aside(), calls)

    def _set_aside(self) -> _Compaction:
        """What a compaction takes: the buffers, and the logs that hold them, the current one
        renamed so that the answers that come meanwhile go to a fresh log. (Called when every
        recorded line is synced: the buffers are exactly what the logs hold.)"""
        logs = self._logs()
        if not (self.buffered or any(log.stat().st_size for log in logs)):
            # Nothing to write; the log answers go to is not this compaction's to remove.
            return _Compaction(None, None, None, [log for log in logs if log != self.wal])
        number = self._next_part
        self._next_part += 1
        self._appender.close()
        if self.wal.is_file():
            aside = self.rundir.parts / wal_files.aside_name(number)
            os.replace(self.wal, aside)
            logs[-1] = aside
        compaction = _Compaction(number, self._results, self._failures, logs)
        self._results = parts.Buffered(self.schema, "completed_at")
        self._failures = parts.Buffered(FAILURE_SCHEMA, "failed_at")
        return compaction

    def _compact(self, compaction: _Compaction,
                 calls: Mapping[str, Mapping[str, int]] | None) -> None:
        """Write a compaction's part, remove the logs it came from, rewrite the checkpoint."""
        if calls is not None:
            self.calls = {op: dict(v) for op, v in calls.items()}
        if compaction.number is not None:
            for kind, buffer in (("results", compaction.results),
                                 ("failures", compaction.failures)):
                if buffer is not None and len(buffer):
                    self._write_part(f"{kind}-{compaction.number:06d}.parquet", buffer.frame())
                    crashpoint("part-written")
        # Everything in these logs is in a part now. A crash before this line leaves both; the
        # same outcome twice is one outcome (the latest per item wins).
        for log in compaction.logs:
            log.unlink(missing_ok=True)
        crashpoint("wal-truncated")
        write_json(self.rundir.checkpoint, {
            "parts": [f"{k}-{n:06d}.parquet" for k, n in self._parts()],
            "calls": self.calls,
            "updated_at": utc_now(),
        })
        crashpoint("checkpoint-written")

    def _write_part(self, name: str, frame: pl.DataFrame) -> None:
        with atomic_write(self.rundir.parts / name) as tmp:
            frame.write_parquet(tmp, **parts.INTERNAL)

    async def run(
        self,
        receive: MemoryObjectReceiveStream[Entry],
        calls: Any,
    ) -> None:
        """The writer task: record what arrives, compact by size or age beside it (a batch
        waits for its log line, never for a part), compact the rest at the end."""
        last = time.monotonic()
        compacting = False

        async def compact(compaction: _Compaction, calls_now: Any) -> None:
            nonlocal compacting
            try:
                await self._guarded(self._compact, compaction, calls_now)
            finally:
                compacting = False

        async with anyio.create_task_group() as group, receive:
            while True:
                timeout = max(0.0, self.flush_s - (time.monotonic() - last))
                message = None
                with anyio.move_on_after(timeout):
                    try:
                        message = await receive.receive()
                    except anyio.EndOfStream:
                        break
                if message is not None:
                    group_commit = await self.commits.gather(receive, message)
                    if self.broken is None:
                        for entry in group_commit:
                            self.record(entry.batch_id, entry.outcomes)
                        await self._guarded(self.sync_wal)
                    for entry in group_commit:
                        entry.durable.set()  # or lost, if broken: nobody waits for ever
                due = self.buffered >= self.flush_rows or time.monotonic() - last >= self.flush_s
                if due and not compacting and self.broken is None:
                    try:
                        compaction = self._set_aside()
                    except OSError as exc:
                        self._break(exc)
                        continue
                    compacting = True
                    group.start_soon(compact, compaction, calls())
                    last = time.monotonic()
        # The compaction in flight has ended with the group: compact the rest.
        await self._guarded(self.flush, calls())

    async def _guarded(self, write: Callable[..., None], *args: Any) -> None:
        if self.broken is not None:
            return
        try:
            await anyio.to_thread.run_sync(write, *args)
        except OSError as exc:
            self._break(exc)

    # -- the final files ----------------------------------------------------------------------

    def finalize(self) -> pl.DataFrame:
        """Write ``results.parquet`` and ``failures.parquet``: each item's latest outcome.
        Returns the results."""
        results, failures = parts.final(self.rundir.parts, self.schema, FAILURE_SCHEMA)
        with atomic_write(self.rundir.results) as tmp:
            results.write_parquet(tmp, **parts.PARQUET)
        crashpoint("finalize-results")
        with atomic_write(self.rundir.failures) as tmp:
            failures.write_parquet(tmp, **parts.PARQUET)
        crashpoint("finalized")
        return results


def elapsed_since(started: datetime) -> float:
    return math.floor((utc_now() - started).total_seconds() * 10) / 10
