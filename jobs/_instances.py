"""What the jobs share: instance IDs and ARNs, partitions, reject reasons. (A module whose
name starts with ``_`` is not a job.)"""

from __future__ import annotations

from typing import Any

import polars as pl
from connect_bulk.pipeline.errors import ClientFault
from connect_bulk.pipeline.job import Batch, Column, Context

from ._listing import instance_key

UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
PARTITION = r"aws|aws-cn|aws-us-gov|aws-iso|aws-iso-b"
INSTANCE_ARN = rf"^arn:(?:{PARTITION}):connect:([a-z0-9-]+):(\d{{12}}):instance/({UUID})$"

INSTANCE_COLUMN = Column("instance_id", ("instance", "instance_arn", "instanceid"),
                         help="instance ID (UUID) or instance ARN")


def partition_of(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def normalize_instances(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Add ``_instance``, ``_inst_region``, ``_inst_account`` from ``instance_id``: a bare ID or
    an instance ARN, lower-cased (IDs and ARNs of one instance are one instance). Each distinct
    value is read once (an instance repeats on every one of its numbers' rows; the pattern over
    each row cost a third of reading a number's) and its parts are put on its rows by value."""
    raw, arn = pl.col("instance_id"), pl.col("_inst_arn").struct
    distinct = frame.select(raw.unique()).with_columns(
        # The ARN's parts in one pass of the pattern (``extract_groups``), not one a part.
        raw.str.extract_groups(INSTANCE_ARN).alias("_inst_arn")).select(
        raw,
        pl.struct(
            pl.when(raw.str.contains(f"^{UUID}$"))
            .then(raw.str.to_lowercase())
            .otherwise(arn.field("3").str.to_lowercase())
            .alias("_instance"),
            arn.field("1").alias("_inst_region"),
            arn.field("2").alias("_inst_account"),
        ).alias("parts"),
    ).collect()
    parts = raw.replace_strict(distinct["instance_id"], distinct["parts"], default=None)
    return frame.with_columns(parts.alias("_parts")).with_columns(
        pl.col("_parts").struct.field("_instance", "_inst_region", "_inst_account")
    ).drop("_parts")


def instance_reasons() -> list[tuple[pl.Expr, pl.Expr]]:
    """The reject rules for ``instance_id`` (after ``normalize_instances``)."""
    return [
        (pl.col("instance_id").is_null(), pl.lit("instance_id is empty")),
        (pl.col("_instance").is_null(), pl.lit("instance_id '") + pl.col("instance_id")
         + pl.lit("' is not an instance ID (UUID) or instance ARN")),
    ]


def first_reason(*rules: tuple[pl.Expr, pl.Expr]) -> pl.Expr:
    """The first rule whose condition holds gives the reject reason; null when none does."""
    expr: Any = pl.when(rules[0][0]).then(rules[0][1])
    for condition, reason in rules[1:]:
        expr = expr.when(condition).then(reason)
    result: pl.Expr = expr.otherwise(None).alias("reason")
    return result


ALIAS_NOTE = "instance-alias"


async def describe_alias(ctx: Context, batch: Batch) -> str | None:
    """The alias an administrator knows the instance by (``DescribeInstance``), noted for
    resume (use through ``PerInstance``: once per instance and run). An instance that cannot
    be described (gone, or not allowed) has none: the alias names things, it never fails an
    item."""
    key = instance_key(batch)
    noted = ctx.notes.get(ALIAS_NOTE, key)
    if noted is None:
        try:
            answer = await ctx.aws.call("connect", "DescribeInstance", region=batch.region,
                                        account=batch.account_id, InstanceId=batch.instance_id,
                                        expected=frozenset({"ResourceNotFoundException"}))
            alias = answer.data.get("Instance", {}).get("InstanceAlias")
        except ClientFault:
            alias = None
        noted = {"alias": str(alias) if alias else None}
        await ctx.notes.put(ALIAS_NOTE, key, noted)
    return noted["alias"]  # type: ignore[no-any-return]
