"""Shards: one input dealt to N processes that need no scheduler of ours.

AWS counts quotas per operation, account and region, so a shard is a set of whole (account,
region) scopes: no two shards ever share a quota. Scopes are dealt by calls, the largest first,
each to the shard with the fewest calls so far (ties: the lower shard, then the scope's name),
so that the same input always gives the same deal and the shards finish close together.

Shard K of N is its own run, ``<run_id>-shard-K-of-N``; ``connect-bulk merge`` joins them. K and
N come from ``--shard K/N``, or from the scheduler: ``AWS_BATCH_JOB_ARRAY_INDEX`` (AWS Batch array
jobs) or ``JOB_COMPLETION_INDEX`` (Kubernetes Indexed Jobs) for K, with ``CONNECT_BULK_SHARDS``
for N.
"""

from __future__ import annotations

import heapq
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

from .errors import UsageError

INDEX_VARIABLES = ("AWS_BATCH_JOB_ARRAY_INDEX", "JOB_COMPLETION_INDEX")
SCOPE = ("account_id", "region")


@dataclass(frozen=True, slots=True)
class Shard:
    k: int
    n: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not match:
            raise UsageError(f"--shard {text!r}: give K/N, shard K (from 0) of N")
        k, n = int(match.group(1)), int(match.group(2))
        if n < 1 or k >= n:
            raise UsageError(f"--shard {text}: K must be 0 to N-1, and N at least 1")
        return cls(k, n)

    def __str__(self) -> str:
        return f"{self.k}/{self.n}"

    @property
    def suffix(self) -> str:
        return f"-shard-{self.k}-of-{self.n}"


def from_environment(environ: Mapping[str, str] = os.environ) -> str | None:
    """``K/N`` from a scheduler's array index and ``CONNECT_BULK_SHARDS``; None without either
    (one without the other is an error: the tasks of an array would each do everything)."""
    shards = environ.get("CONNECT_BULK_SHARDS")
    if not shards:
        given = [name for name in INDEX_VARIABLES if environ.get(name, "").strip()]
        if given:  # every task of the array would do the whole input
            raise UsageError(f"{given[0]} is set (an array of tasks) but CONNECT_BULK_SHARDS is "
                             "not: set it to the number of tasks, or give --shard K/N")
        return None
    for name in INDEX_VARIABLES:
        if environ.get(name, "").strip():
            return f"{environ[name].strip()}/{shards.strip()}"
    raise UsageError(f"CONNECT_BULK_SHARDS is set but no shard index is: set one of "
                     f"{', '.join(INDEX_VARIABLES)}, or give --shard K/N")


def _scope_key() -> list[pl.Expr]:
    """A scope as text (an instance given by bare ID has no account or region yet: "")."""
    return [pl.col(name).cast(pl.String).fill_null("").alias(name) for name in SCOPE]


def deal(items: pl.DataFrame, n: int) -> pl.DataFrame:
    """Each (account, region) scope of the planned ``items``: its items, calls (batches) and
    shard (0 to ``n - 1``)."""
    from .plan import calls_by_scope

    scopes = calls_by_scope(items).select(*_scope_key(), "items", pl.col("batches")
                                          .alias("calls")).sort(
        ["calls", *SCOPE], descending=[True, False, False])
    loads = [(0, k) for k in range(n)]  # (calls so far, shard): the least loaded first
    dealt = []
    for calls in scopes["calls"]:
        load, k = heapq.heappop(loads)
        dealt.append(k)
        heapq.heappush(loads, (load + calls, k))
    return scopes.with_columns(pl.Series("shard", dealt, dtype=pl.Int64))


def take(items: pl.DataFrame, shard: Shard, dealt: pl.DataFrame | None = None) -> pl.DataFrame:
    """The items of ``shard``'s scopes, in their order (``dealt``: ``deal(items, shard.n)``,
    when the caller has it already)."""
    dealt = deal(items, shard.n) if dealt is None else dealt
    mine = dealt.filter(pl.col("shard") == shard.k).select(*SCOPE, pl.lit(True).alias("_in"))
    inside = items.select(*_scope_key()).join(
        mine, on=list(SCOPE), how="left", maintain_order="left")["_in"].fill_null(False)
    return items.filter(inside)
