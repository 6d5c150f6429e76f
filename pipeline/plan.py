"""From the job's items to batches: de-duplication, grouping per instance into calls of at most
``batch_size`` items, stable batch ids, and the figures ``plan`` prints."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from .inputs import read_input, rejects_frame
from .job import Batch, Item, Job

ENGINE_COLUMNS = ("item_key", "instance_id", "region", "account_id", "input_row")


@dataclass(frozen=True, slots=True)
class Planned:
    items: pl.DataFrame  # unique items with batch_id, in batch order
    rows_total: int
    rows_rejected: int
    rows_duplicate: int

    @property
    def items_total(self) -> int:
        return self.items.height


def deduplicate(items: pl.DataFrame) -> pl.DataFrame:
    """One row per (instance_id, item_key): the first in the input. (Each step copies every
    column, so it is taken only when there is something to do.)"""
    if not items["input_row"].is_sorted():
        items = items.sort("input_row")
    first = items.select(pl.struct("instance_id", "item_key").is_first_distinct()).to_series()
    return items if first.all() else items.filter(first)


def assign_batches(items: pl.DataFrame, batch_size: int) -> pl.DataFrame:
    """Group per instance, in input order, ``batch_size`` items a batch: the fewest calls.

    A batch id is ``<instance_id>#<n>``, the n-th chunk of that instance's items in input order,
    so the same input always gives the same batches and a resumed run can trust them.
    """
    ordered = items.sort("instance_id", "input_row")
    chunk = (pl.int_range(pl.len()).over("instance_id") // batch_size).cast(pl.Int64)
    batched = ordered.with_columns(
        (pl.col("instance_id") + "#" + chunk.cast(pl.String).str.zfill(5)).alias("batch_id")
    )
    if batched["batch_id"].is_sorted():  # as it is unless an ID sorts below "#"
        return batched
    return batched.sort("batch_id", "input_row")


def scope_instances(items: pl.DataFrame) -> pl.DataFrame:
    """An instance named once by ARN is in that ARN's account and region on every row."""
    return items.with_columns(
        pl.col(name).fill_null(pl.col(name).drop_nulls().first().over("instance_id"))
        for name in ("region", "account_id")
    )


def plan(job: Job, items: pl.DataFrame, *, rows_total: int, rows_rejected: int) -> Planned:
    unique = deduplicate(scope_instances(items))
    return Planned(
        items=assign_batches(unique, job.batch_size),
        rows_total=rows_total,
        rows_rejected=rows_rejected,
        rows_duplicate=items.height - unique.height,
    )


def iter_batches(items: pl.DataFrame, *, chunk_rows: int = 20_000) -> Iterator[Batch]:
    """Batches of ``items`` (which carry ``batch_id`` and are in batch order), built lazily:
    rows become Python objects a chunk at a time, never all at once."""
    if items.is_empty():
        return
    data_columns = [c for c in items.columns if c not in (*ENGINE_COLUMNS, "batch_id")]
    columns = [*ENGINE_COLUMNS, "batch_id", *data_columns]
    # Cut on batch boundaries, so that a chunk holds whole batches.
    ends = items.select(
        (pl.col("batch_id") != pl.col("batch_id").shift(-1)).fill_null(True).arg_true()
    ).to_series().to_list()
    start = 0
    while start < items.height:
        stop = next((end + 1 for end in ends if end + 1 - start >= chunk_rows), items.height)
        rows = items.slice(start, stop - start).select(columns).iter_rows()
        current: list[Item] = []
        current_id = ""
        for row in rows:
            if current and row[5] != current_id:
                yield Batch(current_id, current[0].instance_id, current[0].region,
                            current[0].account_id, tuple(current))
                current = []
            current_id = row[5]
            current.append(Item(row[0], row[1], row[2], row[3], row[4],
                                dict(zip(data_columns, row[6:], strict=True))))
        if current:
            yield Batch(current_id, current[0].instance_id, current[0].region,
                        current[0].account_id, tuple(current))
        start = stop


def calls_by_scope(items: pl.DataFrame) -> pl.DataFrame:
    """Batches per (account, region): what each rate limiter will see."""
    return (
        items.group_by("account_id", "region")
        .agg(pl.col("batch_id").n_unique().alias("batches"), pl.len().alias("items"),
             pl.col("instance_id").n_unique().alias("instances"))
        .sort("account_id", "region", nulls_last=True)
    )


def estimate(job: Job, items: pl.DataFrame, *, rate: float, burst: float) -> dict[str, Any]:
    """Calls per operation, and the time the rate limits alone need.

    Calls are counted per batch, per item (an upper bound: a change not needed is not made)
    and per instance (a listing). Limiters are per (operation, account, region) and run side by
    side, so the estimate is the slowest of them: ``(calls - burst) / rate``.
    """
    scopes = calls_by_scope(items)
    factors = [(job.calls_per_batch(), "batches"), (job.calls_per_item(), "items"),
               (job.calls_per_instance(), "instances")]
    calls: dict[str, int] = {}
    for per, _ in factors:
        calls |= dict.fromkeys(per, 0)
    slowest = 0.0
    for scope in scopes.iter_rows(named=True):
        in_scope: dict[str, int] = {}
        for per, unit in factors:
            for op, factor in per.items():
                in_scope[op] = in_scope.get(op, 0) + math.ceil(scope[unit] * factor)
        for op, n in in_scope.items():
            calls[op] += n
            slowest = max(slowest, max(0.0, n - burst) / rate)
    return {
        "calls": calls,
        "estimated_s": round(slowest, 1),
        "scopes": [
            {"account_id": s["account_id"], "region": s["region"], "items": s["items"],
             "batches": s["batches"]}
            for s in scopes.iter_rows(named=True)
        ],
    }


@dataclass(frozen=True, slots=True)
class Prepared:
    job: Job
    input_path: Path
    sha256: str
    planned: Planned
    rejects: pl.DataFrame
    rows_blank: int


def prepare(job: Job, input_path: Path) -> Prepared:
    table = read_input(input_path, type(job).columns)
    canonical = [c.name for c in type(job).columns]
    normalized = job.normalize(table.frame.select("input_row", *canonical))
    rejects = rejects_frame(table, normalized.rejects)
    rows_total, sha256, rows_blank = table.frame.height, table.sha256, table.rows_blank
    del table  # the input as read is not needed to plan: let it go before planning copies
    planned = plan(job, normalized.items, rows_total=rows_total, rows_rejected=rejects.height)
    return Prepared(job, input_path, sha256, planned, rejects, rows_blank)
