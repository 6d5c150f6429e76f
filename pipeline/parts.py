"""The journal's parts on disk (``parts/results-N.parquet``, ``parts/failures-N.parquet``) and
each item's latest outcome among them: what a resumed run skips, and what the final files
hold. Parts are numbered in the order they were written, so the latest outcome of an item is
its last row in part order (a failure after a result of the same part)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from .plan import first_of_each

KEY = ["instance_id", "item_key"]
#: how every Parquet file of a run is written: zstd at level 1 takes half the CPU of the
#: default level, for files no larger
PARQUET: dict[str, Any] = {"compression": "zstd", "compression_level": 1}
#: how the run's own files are written (the parts, ``items.parquet``): without the min/max
#: statistics of each column, which only a filtered scan reads (the run reads them whole):
#: 5-7% of a part's CPU (a run's 13 parts of 240,000 rows in all: 131 ms against 141)
INTERNAL: dict[str, Any] = PARQUET | {"statistics": False}
_PART = re.compile(r"^(results|failures)-(\d{6})\.parquet$")
TIMESTAMP = pl.Datetime("us", "UTC")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class Buffered:
    """Outcomes on their way to the next part: columns of values as the log holds them, and
    each row's time in microseconds since the epoch (a part's time column is made from
    integers; from datetimes it costs 40 times as much, and from rows, three times)."""

    def __init__(self, schema: Mapping[str, Any], time_column: str) -> None:
        self.schema, self.time_column = schema, time_column
        #: the columns logged, in order: the schema's but the time
        self.logged = [c for c in schema if c != time_column]
        self.clear()

    def clear(self) -> None:
        self.columns: dict[str, list[Any]] = {c: [] for c in self.logged}
        self.micros: list[int] = []

    def __len__(self) -> int:
        return len(self.micros)

    def add(self, columns: Mapping[str, list[Any]], at: datetime) -> None:
        """A batch's columns (``logged``; none when it had no outcome of this kind)."""
        if not columns:
            return
        for name, values in self.columns.items():
            values += columns[name]
        self.micros += [(at - _EPOCH) // _MICROSECOND] * len(columns[self.logged[0]])

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame([
            pl.Series(name, self.micros, dtype=pl.Int64).cast(TIMESTAMP)
            if name == self.time_column else pl.Series(name, self.columns[name], dtype=dtype)
            for name, dtype in self.schema.items()])


def listed(directory: Path) -> list[tuple[str, int]]:
    """The parts in ``directory``: (kind, number), in the order they were written."""
    found = []
    for path in directory.glob("*.parquet"):
        match = _PART.match(path.name)
        if match:
            found.append((match.group(1), int(match.group(2))))
    return sorted(found, key=lambda p: p[1])


def read(directory: Path, kind: str, schema: Mapping[str, Any],
         columns: list[str] | None = None) -> pl.DataFrame:
    """Every row of one kind of part, in part order, with its part number (``_part``)."""
    frames = [
        pl.scan_parquet(directory / f"{k}-{n:06d}.parquet").with_columns(
            pl.lit(n, dtype=pl.Int64).alias("_part"))
        for k, n in listed(directory) if k == kind
    ]
    if not frames:
        return pl.DataFrame(schema=dict(schema) | {"_part": pl.Int64}).select(
            *(columns or schema), "_part")
    frame = pl.concat(frames, how="diagonal_relaxed")
    return (frame.select(*columns, "_part") if columns else frame).collect()


def latest_rows(results: pl.DataFrame, failures: pl.DataFrame) -> tuple[pl.Series, pl.Series]:
    """Which rows of ``results`` and of ``failures`` (each in part order, with ``_part``) hold
    their item's latest outcome. Both are in part order already, so only a run with failures
    and results in more than one part is sorted."""
    order = pl.concat([results.select(pl.col("_part") * 2),
                       failures.select(pl.col("_part") * 2 + 1)]).to_series()
    keys = pl.concat([results.select(KEY), failures.select(KEY)])
    if order.is_sorted():
        last = first_of_each(keys, KEY, keep="last")
    else:
        ranks = pl.select(pl.int_range(order.len(), dtype=pl.UInt32).sort_by(
            order, maintain_order=True)).to_series()
        last_in_order = first_of_each(keys.gather(ranks), KEY, keep="last")
        last = pl.Series("last", [False] * keys.height, dtype=pl.Boolean).scatter(
            ranks.filter(last_in_order), True)
    return last.head(results.height), last.tail(failures.height)


def keep(frame: pl.DataFrame, rows: pl.Series) -> pl.DataFrame:
    """The rows of ``frame`` marked in ``rows`` (without a copy when that is all of them)."""
    return frame if rows.all() else frame.filter(rows)


def latest(directory: Path, schema: Mapping[str, Any],
           failure_schema: Mapping[str, Any]) -> pl.DataFrame:
    """Per item ever written: its latest outcome (``ok``, ``retryable``, ``error_code``)."""
    results = read(directory, "results", schema, KEY)
    failures = read(directory, "failures", failure_schema, [*KEY, "retryable", "error_code"])
    in_results, in_failures = latest_rows(results, failures)
    return pl.concat([
        keep(results, in_results).select(
            *KEY, pl.lit(True).alias("ok"), pl.lit(False).alias("retryable"),
            pl.lit(None, dtype=pl.String).alias("error_code")),
        keep(failures, in_failures).select(
            *KEY, pl.lit(False).alias("ok"), "retryable", "error_code"),
    ])


def final(directory: Path, schema: Mapping[str, Any],
          failure_schema: Mapping[str, Any]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The final results and failures: each item's latest outcome, in input order."""
    results = read(directory, "results", schema)
    failures = read(directory, "failures", failure_schema)
    in_results, in_failures = latest_rows(results, failures)

    def finished(frame: pl.DataFrame, rows: pl.Series, schema: Mapping[str, Any]
                 ) -> pl.DataFrame:
        frame = keep(frame, rows).select(list(schema))
        return frame if frame["input_row"].is_sorted() else frame.sort("input_row")

    return (finished(results, in_results, schema),
            finished(failures, in_failures, failure_schema))
