"""From the job's items to batches: de-duplication, grouping per instance into calls of at most
``batch_size`` items, stable batch ids, and the figures ``plan`` prints."""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from itertools import repeat
from pathlib import Path
from typing import Any, Literal

import polars as pl

from .crashpoints import crashpoint
from .inputs import InputFile
from .job import NO_DATA, Batch, Item, Job

KEY = ["instance_id", "item_key"]
ENGINE_COLUMNS = ("item_key", "instance_id", "region", "account_id", "input_row")
#: columns whose values repeat down the items (an instance's every number): held as categories,
#: four bytes a row instead of the whole string, as is ``batch_id``
SHARED = ("instance_id", "region", "account_id")


def shared_as_categories(items: pl.DataFrame) -> pl.DataFrame:
    return items.with_columns(pl.col(c).cast(pl.Categorical) for c in SHARED)


@dataclass(frozen=True, slots=True)
class Planned:
    items: pl.DataFrame  # unique items with batch_id, in batch order
    rows_total: int
    rows_rejected: int
    rows_duplicate: int

    @property
    def items_total(self) -> int:
        return self.items.height


def first_of_each(items: pl.DataFrame, key: list[str], *,
                  keep: Literal["first", "last"] = "first") -> pl.Series:
    """Whether each row is the first (or last) of its ``key`` (rows in input order). A 64-bit
    hash of the key finds the rows that may repeat (eight bytes a row); only those are compared
    whole, so a hash shared by two different keys costs neither."""
    hashes = items.select(pl.struct(*key).hash()).to_series()
    ordered = hashes.sort()
    repeated = ordered.filter(ordered == ordered.shift())
    if repeated.is_empty():
        return pl.Series("first", [True] * items.height, dtype=pl.Boolean)
    rows = hashes.is_in(repeated.unique()).arg_true()
    whole = pl.struct(*key)
    first = items.select(*key).gather(rows).select(
        whole.is_first_distinct() if keep == "first" else whole.is_last_distinct()
    ).to_series()
    return pl.Series("first", [True] * items.height, dtype=pl.Boolean).scatter(
        rows.filter(~first), False)


def deduplicate(items: pl.DataFrame) -> pl.DataFrame:
    """One row per (instance_id, item_key): the first in the input. (The filter copies every
    column: it is taken only when there is something to drop.)"""
    if not items["input_row"].is_sorted():
        items = items.sort("input_row")
    first = first_of_each(items, KEY)
    return items if first.all() else items.filter(first)


def assign_batches(items: pl.DataFrame, batch_size: int) -> pl.DataFrame:
    """Group per instance, in input order, ``batch_size`` items a batch: the fewest calls.

    A batch id is ``<instance_id>#<n>``, the n-th chunk of that instance's items in input order,
    so the same input always gives the same batches and a resumed run can trust them. It is a
    category: the id strings are made once a batch, not once a row.
    """
    # In input order already; an input grouped by instance in ID order (what most exports
    # are) needs no sort, which would copy every column.
    ordered = items if items["instance_id"].is_sorted() else items.sort("instance_id",
                                                                         "input_row")
    chunk = (pl.int_range(pl.len()).over("instance_id") // batch_size).cast(pl.Int32)
    starts = ordered.select(
        ((pl.col("instance_id") != pl.col("instance_id").shift()).fill_null(True)
         | (chunk != chunk.shift()).fill_null(True)).alias("start"))
    heads = ordered.select("instance_id", chunk.alias("n")).filter(starts.to_series())
    ids = heads.select(
        (pl.col("instance_id").cast(pl.String) + "#" + pl.col("n").cast(pl.String).str.zfill(5))
        .cast(pl.Categorical)).to_series()
    which = starts.select(pl.col("start").cum_sum().cast(pl.UInt32) - 1).to_series()
    batched = ordered.with_columns(ids.gather(which).alias("batch_id"))
    if batched["batch_id"].is_sorted():  # as it is unless an ID sorts below "#"
        return batched
    return batched.sort("batch_id", "input_row")


def scope_instances(items: pl.DataFrame) -> pl.DataFrame:
    """An instance named once by ARN is in that ARN's account and region on every row."""
    scoped = ("region", "account_id")
    if not any(items[name].has_nulls() for name in scoped):
        return items  # every row names its scope (ARNs): nothing to fill
    return items.with_columns(
        pl.col(name).fill_null(pl.col(name).drop_nulls().first().over("instance_id"))
        for name in scoped
    )


def plan(job: Job, items: pl.DataFrame, *, rows_total: int, rows_rejected: int) -> Planned:
    items = shared_as_categories(items)
    unique = deduplicate(scope_instances(items))
    return Planned(
        items=assign_batches(unique, job.batch_size),
        rows_total=rows_total,
        rows_rejected=rows_rejected,
        rows_duplicate=items.height - unique.height,
    )


def iter_batches(items: pl.DataFrame, *, chunk_rows: int = 20_000) -> Iterator[Batch]:
    """Batches of ``items`` (which carry ``batch_id`` and are in batch order), built lazily:
    rows become Python objects a chunk at a time, never all at once, and column by column
    (a row at a time costs three times as much, on the run's hot path)."""
    if items.is_empty():
        return
    data_columns = [c for c in items.columns if c not in (*ENGINE_COLUMNS, "batch_id")]
    # Where each batch ends; chunks are cut on those ends, so that a chunk holds whole batches.
    ends = (items.select(
        (pl.col("batch_id") != pl.col("batch_id").shift(-1)).fill_null(True).arg_true()
    ).to_series() + 1).to_list()
    first = 0  # the first batch of the chunk, by its place in ``ends``
    while first < len(ends):
        start = ends[first - 1] if first else 0
        last = bisect.bisect_left(ends, start + chunk_rows, lo=first)
        last = min(max(last, first), len(ends) - 1)  # at least one batch, at most all
        chunk = items.slice(start, ends[last] - start)
        bounds = [((ends[i - 1] if i else 0) - start, ends[i] - start)
                  for i in range(first, last + 1)]
        keys, input_rows = chunk["item_key"].to_list(), chunk["input_row"].to_list()
        # A batch is one instance's: its ID, instance, region and account are read once a
        # batch, not once an item (a category's string is a new object each time it is read).
        heads = chunk.select("batch_id", *SHARED)[[a for a, _ in bounds]].rows()
        # A job's column that is null all through the chunk (a number's E.164, when the input
        # gives IDs) is left out of ``data``: a job reads it with ``get``.
        given = [c for c in data_columns if chunk[c].null_count() < chunk.height]
        values = [chunk[c].to_list() for c in given]
        data = [dict(zip(given, row, strict=True)) for row in zip(*values, strict=True)
                ] if given else [NO_DATA] * chunk.height
        for (batch_id, instance_id, region, account_id), (a, b) in zip(heads, bounds,
                                                                       strict=True):
            shared = repeat(instance_id), repeat(region), repeat(account_id)
            # Items made by tuple.__new__ itself: no Python frame an item (Item() and
            # Item._make each run one). The slices are of one length; the repeats, endless.
            yield Batch(batch_id, instance_id, region, account_id, tuple(map(
                tuple.__new__, repeat(Item),
                zip(keys[a:b], *shared, input_rows[a:b], data[a:b], strict=False))))
        first = last + 1


def calls_by_scope(items: pl.DataFrame) -> pl.DataFrame:
    """Batches per (account, region): what each rate limiter will see. ``items`` are in batch
    order, so a batch or an instance is counted where it starts (counting distinct IDs would
    hash every row's)."""
    def starts(name: str) -> pl.Expr:
        return (pl.col(name) != pl.col(name).shift()).fill_null(True).alias(name)

    return (
        items.select("account_id", "region", starts("batch_id"), starts("instance_id"))
        .group_by("account_id", "region")
        .agg(pl.col("batch_id").sum().alias("batches"), pl.len().alias("items"),
             pl.col("instance_id").sum().alias("instances"))
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
    """Read, judge and plan the input, a block of it at a time: what is held is the items,
    their repeated IDs as categories, and the rejects with their original columns; never the
    input as read."""
    source = InputFile(input_path, type(job).columns)
    parts: list[pl.DataFrame] = []
    refused: list[pl.DataFrame] = []
    copies = 0
    for block in source.blocks():
        normalized = job.normalize(source.canonical(block).lazy())
        items, reasons = pl.collect_all([normalized.items, normalized.rejects])
        # Copies of a row within a block go at once (a number given twice with two flows is
        # not a copy: that is for ``across_rows`` to see).
        first = first_of_each(items, [c for c in items.columns if c != "input_row"])
        held = items if first.all() else items.filter(first)
        parts.append(shared_as_categories(held))
        copies += items.height - held.height
        refused.append(source.originals(block, reasons))
    items = pl.concat(parts, rechunk=False)
    del parts
    across = job.across_rows(items)
    if across.height:
        items = items.join(across, on="input_row", how="anti", maintain_order="left")
        refused.append(source.rejects_of(across))
    rejects = pl.concat(refused).sort("input_row")
    crashpoint("input-read")
    planned = plan(job, items, rows_total=source.rows_total, rows_rejected=rejects.height)
    planned = replace(planned, rows_duplicate=planned.rows_duplicate + copies)
    return Prepared(job, input_path, source.sha256, planned, rejects, source.rows_blank)
