"""Phone numbers as the jobs take them: a phone number ID (UUID), a phone number ARN (or the
legacy form under the instance), or an E.164 number resolved per instance through
``ListPhoneNumbersV2`` (listed once per instance and run, noted page by page so that a resumed
run does not list again). Shared by the jobs that take numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import polars as pl
from connect_bulk.pipeline.errors import ClientFault
from connect_bulk.pipeline.job import Batch, Column, Context, Failure, Item, Outcome

from ._instances import PARTITION, UUID, instance_reasons, normalize_instances, partition_of
from ._listing import PerInstance, noted_listing

NUMBER_ARN = (
    rf"^arn:(?:{PARTITION}):connect:([a-z0-9-]+):(\d{{12}}):"
    rf"(?:instance/({UUID})/)?phone-number/({UUID})$"
)
E164_LIKE = r"^\+?[0-9 ().\-]{4,}$"
E164 = r"^\+[1-9][0-9]{1,14}$"
NOT_FOUND = "PhoneNumberNotFound"
KEY = attrgetter("item_key")
NUMBER_COLUMN = Column("phone_number", ("phone_number_id", "phone_number_arn", "resource_id"),
                       help="phone number ID (UUID), phone number ARN, or E.164 number")


def normalize_numbers(frame: pl.LazyFrame) -> pl.LazyFrame:
    """Add the instance's and the number's parts: ``_instance``, ``_inst_region``,
    ``_inst_account``, ``_number`` (ID), ``_num_region``, ``_num_account``, ``_num_instance``,
    ``_e164`` (+1 (555) 010-0000 and the like, as E.164)."""
    number, arn = pl.col("phone_number"), pl.col("_num_arn").struct
    return normalize_instances(frame).with_columns(
        number.str.extract_groups(NUMBER_ARN).alias("_num_arn")).with_columns(
        pl.when(number.str.contains(f"^{UUID}$"))
        .then(number.str.to_lowercase())
        .otherwise(arn.field("4").str.to_lowercase())
        .alias("_number"),
        arn.field("1").alias("_num_region"),
        arn.field("2").alias("_num_account"),
        arn.field("3").str.to_lowercase().alias("_num_instance"),
    ).with_columns(
        # Only what is not an ID or an ARN: the pattern skips a null, not a value.
        pl.when(pl.col("_number").is_null()).then(number).str.replace_all(r"[ ().\-]", "")
        .alias("_e164"),
    )


def number_reasons() -> list[tuple[pl.Expr, pl.Expr]]:
    """The reject rules for an instance and its number (after ``normalize_numbers``)."""
    number, inst, num = pl.col("phone_number"), pl.col("_instance"), pl.col("_number")
    quoted = pl.lit("'") + number + pl.lit("'")
    both_scoped = pl.col("_inst_region").is_not_null() & pl.col("_num_region").is_not_null()
    return [
        *instance_reasons(),
        (number.is_null(), pl.lit("phone_number is empty")),
        (num.is_null() & number.str.contains(E164_LIKE) & ~pl.col("_e164").str.contains(E164),
         pl.lit("phone_number ") + quoted
         + pl.lit(" is not a valid E.164 number (+ country code and number, at most 15 "
                  "digits)")),
        (num.is_null() & ~pl.col("_e164").str.contains(E164), pl.lit("phone_number ") + quoted
         + pl.lit(" is not a phone number ID (UUID) or phone number ARN")),
        (both_scoped & ((pl.col("_inst_region") != pl.col("_num_region"))
                        | (pl.col("_inst_account") != pl.col("_num_account"))),
         pl.lit("phone number ARN is in ") + pl.col("_num_region") + pl.lit("/")
         + pl.col("_num_account") + pl.lit(" but the instance is in ")
         + pl.col("_inst_region") + pl.lit("/") + pl.col("_inst_account")),
        (pl.col("_num_instance").is_not_null() & (pl.col("_num_instance") != inst),
         pl.lit("phone number ARN names instance ") + pl.col("_num_instance")
         + pl.lit(", not ") + inst),
    ]


def number_item_columns() -> list[pl.Expr]:
    """The engine's item columns for a number, and ``phone_number`` (E.164, for a number given
    so; the ID is the item key)."""
    num = pl.col("_number")
    return [
        # A number given as E.164 is keyed by it until the instance's listing names its ID.
        pl.coalesce(num, pl.col("_e164")).alias("item_key"),
        pl.col("_instance").alias("instance_id"),
        pl.coalesce("_inst_region", "_num_region").alias("region"),
        pl.coalesce("_inst_account", "_num_account").alias("account_id"),
        pl.col("input_row"),
        pl.when(num.is_null()).then(pl.col("_e164")).alias("phone_number"),
    ]


def number_schema(**columns: Any) -> dict[str, Any]:
    """A number job's result columns: the number's own, then ``columns``, then its scope."""
    own = ("instance_id", "instance_alias", "phone_number_id", "phone_number_arn",
           "phone_number")
    return dict.fromkeys(own, pl.String) | columns | {"region": pl.String,
                                                        "account_id": pl.String}


def number_row(batch: Batch, number_id: str, *, alias: str | None, e164: str | None,
               arn: str | None = None) -> dict[str, Any]:
    """The number's own columns of a result row (``number_schema``): ``number_columns``'s,
    for one number."""
    columns = number_columns(batch, [number_id], alias=alias, e164=[e164],
                             arns=[arn or number_arn(batch, number_id)])
    return {name: values[0] for name, values in columns.items()}


def number_columns(batch: Batch, number_ids: list[str], *, alias: str | None,
                   e164: list[str | None], arns: list[str]) -> dict[str, list[Any]]:
    """The number's own columns of many result rows at once."""
    def each(value: Any) -> list[Any]:
        return [value] * len(number_ids)

    return {"instance_id": each(batch.instance_id), "instance_alias": each(alias),
            "phone_number_id": number_ids, "phone_number_arn": arns, "phone_number": e164,
            "region": each(batch.region), "account_id": each(batch.account_id)}


def number_arn(batch: Batch, number_id: str) -> str:
    """The ARN of a number of the batch's instance (BatchGetFlowAssociation's ResourceIds)."""
    return (f"arn:{partition_of(batch.region)}:connect:{batch.region}:{batch.account_id}:"
            f"phone-number/{number_id}")


@dataclass(frozen=True, slots=True)
class Directory:
    """An instance's claimed numbers: E.164 -> [ID, ARN], and ID -> E.164."""

    by_e164: dict[str, list[str]]
    by_id: dict[str, str]


@dataclass(frozen=True, slots=True)
class Resolved:
    """A batch's numbers: item key -> phone number ID, ID -> E.164 where known, and the items
    that are not numbers of the instance (failures already)."""

    ids: dict[str, str]
    e164: dict[str, str]
    failures: list[Outcome]


class NumberDirectory:
    """E.164 numbers to IDs, per instance: ``ListPhoneNumbersV2`` once per instance and run."""

    def __init__(self) -> None:
        self._directories = PerInstance(self._list)

    @staticmethod
    def _names_e164(batch: Batch) -> bool:
        # One search of the keys joined, not a test a number: an E.164 number starts with
        # "+", and no key holds a line break.
        return "\n+" in "\n" + "\n".join(map(KEY, batch.items))

    async def ahead(self, ctx: Context, batch: Batch) -> None:
        """The instance's listing, ahead (``Job.look_ahead``), when the batch names numbers by
        E.164."""
        if self._names_e164(batch):
            await self._directories.ahead(ctx, batch)

    async def resolve(self, ctx: Context, batch: Batch) -> Resolved:
        if not self._names_e164(batch):
            keys = list(map(KEY, batch.items))
            return Resolved(dict(zip(keys, keys, strict=True)), {}, [])
        directory = await self._directories.of(ctx, batch)
        ids: dict[str, str] = {}
        failures: list[Outcome] = []
        for item in batch.items:
            if not item.item_key.startswith("+"):
                ids[item.item_key] = item.item_key
            elif item.item_key in directory.by_e164:
                ids[item.item_key] = directory.by_e164[item.item_key][0]
            else:
                failures.append(not_claimed(item, batch))
        return Resolved(ids, directory.by_id, failures)

    @staticmethod
    async def _list(ctx: Context, batch: Batch) -> Directory:
        """The instance's claimed numbers both ways, every page."""
        pages = await noted_listing(ctx, batch, "ListPhoneNumbersV2", lambda data: {
            number["PhoneNumber"]: [number["PhoneNumberId"].lower(), number["PhoneNumberArn"]]
            for number in data.get("ListPhoneNumbersSummaryList", [])})
        by_e164 = {e164: entry for page in pages for e164, entry in page.items()}
        return Directory(by_e164, {entry[0]: e164 for e164, entry in by_e164.items()})


def not_claimed(item: Item, batch: Batch) -> Failure:
    return Failure(item, ClientFault(
        NOT_FOUND, f"{item.item_key} is not claimed in instance {batch.instance_id} "
        f"({batch.region})"))
