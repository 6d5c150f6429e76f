"""The journal: one writer task owns every write of outcomes.

Outcomes arrive batch by batch on a stream. The writer appends them at once to a write-ahead
log (``parts/wal.jsonl``, fsynced once for all that arrived together), so an answered call is
never lost to a crash: at most the calls still in flight are made again. Every ``flush_rows``
rows or ``flush_s`` seconds it compacts what it holds into a part file
(``parts/results-N.parquet`` and/or ``parts/failures-N.parquet``, written aside then renamed),
empties the log, and rewrites the checkpoint. A renamed part is complete, so a resumed run counts
every part on disk, after compacting whatever the log still holds.

The final files keep, for each item, its latest outcome (parts are numbered in order), so a
redriven item that succeeds leaves ``failures.parquet``.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import orjson
import polars as pl
from anyio.streams.memory import MemoryObjectReceiveStream

from .crashpoints import crashpoint
from .errors import DamagedRun
from .job import Failure, Outcome, Success
from .rundir import RunDir, atomic_write, utc_now, write_json

KEY = ["instance_id", "item_key"]
TIMESTAMP = pl.Datetime("us", "UTC")
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
_PART = re.compile(r"^(results|failures)-(\d{6})\.parquet$")


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
    ) -> None:
        self.rundir = rundir
        self.schema = result_schema(job_schema)
        self.flush_rows = flush_rows
        self.flush_s = flush_s
        self.counts = Counts()
        self.calls: dict[str, dict[str, int]] = {}
        # Rows as the log holds them, each with its timestamp last (see ``_buffer``).
        self._results: list[list[Any]] = []
        self._failures: list[list[Any]] = []
        self._next_part = 1 + max((n for _, n in self._parts()), default=0)
        self._wal_lines: list[bytes] = []
        # The log's column order: the schema but the timestamp, logged once per batch.
        self._logged_result_columns = [c for c in self.schema if c != "completed_at"]
        self._logged_failure_columns = [c for c in FAILURE_SCHEMA if c != "failed_at"]
        # Where the engine's own values go in a logged result row (they win over the job's).
        self._engine_positions = [self._logged_result_columns.index(c) for c in
                                  ("item_key", "instance_id", "input_row", "batch_id",
                                   "attempts")]
        self.redrive = False
        #: told when a write fails (disk full, read-only): the run must stop; nothing more is
        #: written, and what was not yet durable is not counted
        self.on_error: Callable[[OSError], None] | None = None
        self.broken: OSError | None = None
        self._uncounted = Counts()

    # -- reading what is on disk ------------------------------------------------------------

    def _parts(self) -> list[tuple[str, int]]:
        found = []
        for path in self.rundir.parts.glob("*.parquet"):
            match = _PART.match(path.name)
            if match:
                found.append((match.group(1), int(match.group(2))))
        return sorted(found, key=lambda p: p[1])

    def _scan(self, kind: str, schema: Mapping[str, Any]) -> pl.LazyFrame:
        frames = [
            pl.scan_parquet(self.rundir.parts / f"{k}-{n:06d}.parquet").with_columns(
                pl.lit(n, dtype=pl.Int64).alias("_part")
            )
            for k, n in self._parts()
            if k == kind
        ]
        if not frames:
            empty = pl.DataFrame(schema=dict(schema) | {"_part": pl.Int64})
            return empty.lazy()
        return pl.concat(frames, how="diagonal_relaxed")

    def latest(self) -> pl.DataFrame:
        """Per item ever written: its latest outcome (``ok``, ``retryable``, ``error_code``)."""
        results = self._scan("results", self.schema).select(
            *KEY, "_part", pl.lit(True).alias("ok"), pl.lit(False).alias("retryable"),
            pl.lit(None, dtype=pl.String).alias("error_code"),
        )
        failures = self._scan("failures", FAILURE_SCHEMA).select(
            *KEY, "_part", pl.lit(False).alias("ok"), "retryable", "error_code"
        )
        return (
            pl.concat([results, failures])
            .sort("_part")
            .group_by(KEY)
            .agg(pl.all().last())
            .collect()
        )

    @property
    def wal(self) -> Path:
        return Path(self.rundir.parts / "wal.jsonl")

    def _read_wal(self) -> list[dict[str, Any]]:
        """The log's entries. A torn last line is a batch whose answer was never acknowledged
        (a crash mid-write); a bad line before the last is damage."""
        if not self.wal.is_file():
            return []
        lines = self.wal.read_bytes().splitlines()
        entries = []
        for number, line in enumerate(lines, 1):
            try:
                entry = orjson.loads(line)
                entry["at"] = datetime.fromisoformat(entry["at"])
                if not isinstance(entry["results"], list) or not isinstance(
                        entry["failures"], list):
                    raise TypeError("results and failures must be lists")
            except (ValueError, KeyError, TypeError) as exc:
                if number == len(lines):
                    continue
                raise DamagedRun(self.wal, f"line {number} is not a journal entry "
                                 f"({type(exc).__name__})") from exc
            entries.append(entry)
        return entries

    def _replay_wal(self) -> None:
        """Put what a crashed execution logged but never compacted back in the buffers."""
        widths = len(self._logged_result_columns), len(self._logged_failure_columns)
        for entry in self._read_wal():
            results, failures = entry["results"], entry["failures"]
            if any(not isinstance(v, list) or len(v) != widths[0] for v in results) or any(
                    not isinstance(v, list) or len(v) != widths[1] for v in failures):
                raise DamagedRun(self.wal, f"an entry of batch {entry.get('batch_id')} does "
                                 "not fit the run's columns")
            self._buffer(results, failures, entry["at"])

    def check(self) -> None:
        """Raise ``DamagedRun`` for a file that cannot be trusted: the planned items, the
        checkpoint, a part it lists that is gone or unreadable."""
        if not self.rundir.items.is_file():
            raise DamagedRun(self.rundir.items, "missing (the run's planned items)")
        listed: list[str] = []
        if self.rundir.checkpoint.is_file():
            checkpoint = self.rundir.read_json(self.rundir.checkpoint)
            listed = list(checkpoint.get("parts", []))
            if not isinstance(checkpoint.get("calls", {}), dict):
                raise DamagedRun(self.rundir.checkpoint, "its calls are not an object")
        for name in listed:
            if not (self.rundir.parts / str(name)).is_file():
                raise DamagedRun(self.rundir.parts / str(name),
                                 "listed in checkpoint.json but missing: its items' outcomes "
                                 "are gone (restore the file, or remove it from the list to "
                                 "call them again)")
        self._read_wal()
        for kind, number in self._parts():
            path = self.rundir.parts / f"{kind}-{number:06d}.parquet"
            try:
                pl.read_parquet_schema(path)
            except (pl.exceptions.PolarsError, OSError) as exc:
                raise DamagedRun(path, f"not a readable Parquet part ({str(exc)[:120]})") \
                    from exc

    def load(self) -> pl.DataFrame:
        """Read the state left by earlier executions; returns ``latest()``."""
        self.check()
        if self.rundir.checkpoint.is_file():
            checkpoint = self.rundir.read_json(self.rundir.checkpoint)
            self.calls = checkpoint.get("calls", {})
        self._replay_wal()
        # Compact what the log held and empty it, always: a torn last line left in place would
        # swallow the first line appended after it.
        self.flush(truncate=True)
        latest = self.latest()
        self.counts.succeeded = int(latest["ok"].sum())
        self.counts.failed = latest.height - self.counts.succeeded
        return latest

    # -- writing ----------------------------------------------------------------------------

    def record(self, batch_id: str, outcomes: list[Outcome]) -> None:
        """Buffer a batch's outcomes as rows of values, and log them as one line: values in
        column order, the timestamp once (the log is on the hot path: keep it lean)."""
        now = utc_now()
        results, failures = [], []
        columns, at = self._logged_result_columns, self._engine_positions
        for outcome in outcomes:
            item = outcome.item
            if self.redrive:
                self._uncounted.failed -= 1  # it was a failure; this outcome replaces it
            if isinstance(outcome, Success):
                self._uncounted.succeeded += 1
                get = outcome.row.get
                values = list(map(get, columns))
                values[at[0]], values[at[1]], values[at[2]] = (
                    item.item_key, item.instance_id, item.input_row)
                values[at[3]], values[at[4]] = batch_id, outcome.attempts
                results.append(values)
            elif isinstance(outcome, Failure):
                self._uncounted.failed += 1
                error = outcome.error
                failures.append([item.item_key, item.instance_id, item.input_row, error.code,
                                 error.message, error.http_status, error.retryable,
                                 error.attempts, batch_id])
        self._wal_lines.append(orjson.dumps(
            {"batch_id": batch_id, "at": now.isoformat(), "results": results,
             "failures": failures}, option=orjson.OPT_APPEND_NEWLINE))
        self._buffer(results, failures, now)

    def _buffer(self, results: list[list[Any]], failures: list[list[Any]],
                at: datetime) -> None:
        """Rows of logged values, each with its timestamp last (a part's columns in the log's
        order, then ``completed_at`` or ``failed_at``)."""
        for values in (*results, *failures):
            values.append(at)
        self._results += results
        self._failures += failures

    def sync_wal(self) -> None:
        """Make every outcome recorded so far durable (one fsync for all of them); only then
        are they counted."""
        if not self._wal_lines:
            return
        lines, self._wal_lines = self._wal_lines, []
        with self.wal.open("ab") as handle:
            handle.writelines(lines)
            handle.flush()
            os.fsync(handle.fileno())
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
        self._results, self._failures, self._wal_lines = [], [], []
        self._uncounted = Counts()

    @property
    def buffered(self) -> int:
        return len(self._results) + len(self._failures)

    def flush(self, calls: Mapping[str, Mapping[str, int]] | None = None, *,
              truncate: bool = False) -> None:
        if calls is not None:
            self.calls = {op: dict(v) for op, v in calls.items()}
        if self._results or self._failures or (truncate and self.wal.is_file()
                                                  and self.wal.stat().st_size):
            number = self._next_part
            self._next_part += 1
            if self._results:
                logged = {c: self.schema[c] for c in self._logged_result_columns}
                frame = pl.DataFrame(self._results, orient="row", schema=logged | {
                    "completed_at": TIMESTAMP}).select(list(self.schema))
                self._write_part(f"results-{number:06d}.parquet", frame)
                crashpoint("part-written")
            if self._failures:
                frame = pl.DataFrame(self._failures, schema=FAILURE_SCHEMA, orient="row")
                self._write_part(f"failures-{number:06d}.parquet", frame)
                crashpoint("part-written")
            self._results, self._failures = [], []
            # Everything in the log is in a part now. A crash before this line leaves both;
            # the same outcome twice is one outcome (the latest per item wins).
            self._wal_lines = []
            with self.wal.open("w") as handle:
                os.fsync(handle.fileno())
            crashpoint("wal-truncated")
        write_json(self.rundir.checkpoint, {
            "parts": [f"{k}-{n:06d}.parquet" for k, n in self._parts()],
            "calls": self.calls,
            "updated_at": utc_now(),
        })
        crashpoint("checkpoint-written")

    def _write_part(self, name: str, frame: pl.DataFrame) -> None:
        with atomic_write(self.rundir.parts / name) as tmp:
            frame.write_parquet(tmp)

    async def run(
        self,
        receive: MemoryObjectReceiveStream[Entry],
        calls: Any,
    ) -> None:
        """The writer task: record what arrives, flush by size or age, flush at the end."""
        last = time.monotonic()
        async with receive:
            while True:
                timeout = max(0.0, self.flush_s - (time.monotonic() - last))
                message = None
                with anyio.move_on_after(timeout):
                    try:
                        message = await receive.receive()
                    except anyio.EndOfStream:
                        break
                if message is not None:
                    group = [message]
                    # Group commit: log everything that is already waiting, then one fsync.
                    while True:
                        try:
                            group.append(receive.receive_nowait())
                        except (anyio.WouldBlock, anyio.EndOfStream):
                            break
                    if self.broken is None:
                        for entry in group:
                            self.record(entry.batch_id, entry.outcomes)
                        await self._guarded(self.sync_wal)
                    for entry in group:
                        entry.durable.set()  # or lost, if broken: nobody waits for ever
                if self.buffered >= self.flush_rows or time.monotonic() - last >= self.flush_s:
                    await self._guarded(self.flush, calls())
                    last = time.monotonic()
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
        latest = self.latest().select(*KEY, "_part", "ok")
        results = (
            self._scan("results", self.schema)
            .join(latest.lazy().filter("ok").select(*KEY, "_part"), on=[*KEY, "_part"])
            .unique(KEY, keep="last")
            .drop("_part")
            .sort("input_row")
            .collect()
        )
        failures = (
            self._scan("failures", FAILURE_SCHEMA)
            .join(latest.lazy().filter(~pl.col("ok")).select(*KEY, "_part"), on=[*KEY, "_part"])
            .unique(KEY, keep="last")
            .drop("_part")
            .sort("input_row")
            .collect()
        )
        results = results.select(list(self.schema)) if results.height else pl.DataFrame(
            schema=self.schema)
        failures = failures.select(list(FAILURE_SCHEMA)) if failures.height else pl.DataFrame(
            schema=FAILURE_SCHEMA)
        with atomic_write(self.rundir.results) as tmp:
            results.write_parquet(tmp)
        crashpoint("finalize-results")
        with atomic_write(self.rundir.failures) as tmp:
            failures.write_parquet(tmp)
        crashpoint("finalized")
        return results


def elapsed_since(started: datetime) -> float:
    return math.floor((utc_now() - started).total_seconds() * 10) / 10
