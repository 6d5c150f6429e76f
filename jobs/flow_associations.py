"""flow-associations: which flow every phone number points at.

Amazon Connect ``BatchGetFlowAssociation`` takes up to 100 resource IDs of one instance and
answers only for the resources that have an association; a requested number missing from the
answer is a result with ``associated = false``. A call refused as a whole because of one of its
numbers (``ResourceNotFoundException`` for a number not claimed in that instance) is split by
the engine until the offending numbers stand alone.
https://docs.aws.amazon.com/connect/latest/APIReference/API_BatchGetFlowAssociation.html
"""

from __future__ import annotations

from typing import Any, ClassVar

import click
import polars as pl

from pipeline.job import Batch, Column, Context, Job, Normalized, Outcome, Success

from ._instances import (
    INSTANCE_COLUMN,
    PARTITION,
    UUID,
    first_reason,
    instance_reasons,
    normalize_instances,
    partition_of,
)

NUMBER_ARN = (
    rf"^arn:(?:{PARTITION}):connect:([a-z0-9-]+):(\d{{12}}):"
    rf"(?:instance/({UUID})/)?phone-number/({UUID})$"
)
E164_LIKE = r"^\+?[0-9 ().\-]{4,}$"
RESOURCE_TYPES = ("VOICE_PHONE_NUMBER", "WHATSAPP_MESSAGING_PHONE_NUMBER")


class FlowAssociations(Job):
    name = "flow-associations"
    summary = "BatchGetFlowAssociation: which flow each phone number is associated with"
    columns = (
        INSTANCE_COLUMN,
        Column("phone_number", ("phone_number_id", "phone_number_arn", "resource_id"),
               help="phone number ID (UUID) or phone number ARN"),
    )
    operation = "BatchGetFlowAssociation"
    batch_size = 100
    split_codes = frozenset(
        {"ResourceNotFoundException", "InvalidParameterException", "InvalidRequestException"}
    )
    result_schema: ClassVar[dict[str, Any]] = {
        "instance_id": pl.String,
        "phone_number_id": pl.String,
        "phone_number_arn": pl.String,
        "phone_number": pl.String,
        "resource_type": pl.String,
        "flow_id": pl.String,
        "associated": pl.Boolean,
        "region": pl.String,
        "account_id": pl.String,
    }

    @classmethod
    def cli_options(cls) -> list[click.Option]:
        return [
            click.Option(
                ["--resource-type"], type=click.Choice(RESOURCE_TYPES),
                default="VOICE_PHONE_NUMBER", show_default=True,
                envvar="CONNECT_BULK_RESOURCE_TYPE",
                help="The ResourceType asked of BatchGetFlowAssociation.",
            )
        ]

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.resource_type = str(options.get("resource_type") or "VOICE_PHONE_NUMBER")

    def normalize(self, frame: pl.DataFrame) -> Normalized:
        number = pl.col("phone_number")
        frame = normalize_instances(frame).with_columns(
            pl.when(number.str.contains(f"^{UUID}$"))
            .then(number.str.to_lowercase())
            .otherwise(number.str.extract(NUMBER_ARN, 4).str.to_lowercase())
            .alias("_number"),
            number.str.extract(NUMBER_ARN, 1).alias("_num_region"),
            number.str.extract(NUMBER_ARN, 2).alias("_num_account"),
            number.str.extract(NUMBER_ARN, 3).str.to_lowercase().alias("_num_instance"),
        )
        inst, num = pl.col("_instance"), pl.col("_number")
        quoted_number = pl.lit("'") + number + pl.lit("'")
        both_scoped = pl.col("_inst_region").is_not_null() & pl.col("_num_region").is_not_null()
        frame = frame.with_columns(first_reason(
            *instance_reasons(),
            (number.is_null(), pl.lit("phone_number is empty")),
            (num.is_null() & number.str.contains(E164_LIKE),
             pl.lit("phone_number ") + quoted_number
             + pl.lit(" is a telephone number; give its phone number ID or ARN")),
            (num.is_null(), pl.lit("phone_number ") + quoted_number
             + pl.lit(" is not a phone number ID (UUID) or phone number ARN")),
            (both_scoped & ((pl.col("_inst_region") != pl.col("_num_region"))
                            | (pl.col("_inst_account") != pl.col("_num_account"))),
             pl.lit("phone number ARN is in ") + pl.col("_num_region") + pl.lit("/")
             + pl.col("_num_account") + pl.lit(" but the instance is in ")
             + pl.col("_inst_region") + pl.lit("/") + pl.col("_inst_account")),
            (pl.col("_num_instance").is_not_null() & (pl.col("_num_instance") != inst),
             pl.lit("phone number ARN names instance ") + pl.col("_num_instance")
             + pl.lit(", not ") + inst),
        ))
        rejects = frame.filter(pl.col("reason").is_not_null()).select("input_row", "reason")
        items = frame.filter(pl.col("reason").is_null()).select(
            pl.col("_number").alias("item_key"),
            pl.col("_instance").alias("instance_id"),
            pl.coalesce("_inst_region", "_num_region").alias("region"),
            pl.coalesce("_inst_account", "_num_account").alias("account_id"),
            "input_row",
            pl.col("_number").alias("phone_number_id"),
        )
        return Normalized(items=items, rejects=rejects)

    async def process(self, batch: Batch, ctx: Context) -> list[Outcome]:
        answer = await ctx.aws.call(
            "connect", self.operation, region=batch.region, account=batch.account_id,
            InstanceId=batch.instance_id,
            ResourceIds=[item.item_key for item in batch.items],
            ResourceType=self.resource_type,
        )
        by_id = {
            summary["ResourceId"].rsplit("/", 1)[-1].lower(): summary
            for summary in answer.data.get("FlowAssociationSummaryList", [])
        }
        partition = partition_of(batch.region)
        outcomes: list[Outcome] = []
        for item in batch.items:
            summary = by_id.get(item.item_key)
            arn = summary["ResourceId"] if summary else (
                f"arn:{partition}:connect:{batch.region}:{batch.account_id}:"
                f"phone-number/{item.item_key}"
            )
            outcomes.append(Success(item, {
                "instance_id": batch.instance_id,
                "phone_number_id": item.item_key,
                "phone_number_arn": arn,
                "phone_number": item.data.get("phone_number"),
                "resource_type": self.resource_type,
                "flow_id": summary.get("FlowId") if summary else None,
                "associated": summary is not None,
                "region": batch.region,
                "account_id": batch.account_id,
            }, answer.attempts))
        return outcomes


JOB = FlowAssociations


def diff_runs(before: pl.DataFrame, after: pl.DataFrame) -> pl.DataFrame:
    """What changed between two runs' results: associations ``added``, ``removed``, and
    ``changed`` (re-pointed to another flow). A number absent from a run counts as not
    associated there."""
    key = ["instance_id", "phone_number_id"]
    columns = [*key, "phone_number_arn", "flow_id"]
    joined = before.select(columns).join(
        after.select(columns), on=key, how="full", coalesce=True, suffix="_after"
    ).rename({"flow_id": "flow_id_before"})
    change = (
        pl.when(pl.col("flow_id_before").is_null() & pl.col("flow_id_after").is_not_null())
        .then(pl.lit("added"))
        .when(pl.col("flow_id_before").is_not_null() & pl.col("flow_id_after").is_null())
        .then(pl.lit("removed"))
        .when(pl.col("flow_id_before") != pl.col("flow_id_after"))
        .then(pl.lit("changed"))
        .otherwise(None)
    )
    return (
        joined.with_columns(
            change.alias("change"),
            pl.coalesce("phone_number_arn_after", "phone_number_arn").alias("phone_number_arn"),
        )
        .filter(pl.col("change").is_not_null())
        .select(*key, "phone_number_arn", "change", "flow_id_before", "flow_id_after")
        .sort("change", *key)
    )
