"""flow-associations: which flow every phone number points at.

Amazon Connect ``BatchGetFlowAssociation`` takes up to 100 resource IDs of one instance and
answers only for the resources that have an association; a requested number missing from the
answer is a result with ``associated = false``. A call refused as a whole because of one of its
numbers (``ResourceNotFoundException`` for a number not claimed in that instance) is split by
the engine until the offending numbers stand alone.
https://docs.aws.amazon.com/connect/latest/APIReference/API_BatchGetFlowAssociation.html
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import anyio
import click
import polars as pl
from connect_bulk.pipeline.edge import edge
from connect_bulk.pipeline.errors import ClientFault, UsageError
from connect_bulk.pipeline.job import (
    Batch,
    Column,
    Context,
    Failure,
    Job,
    Normalized,
    Outcome,
    Success,
)
from connect_bulk.pipeline.options import job_option
from connect_bulk.pipeline.rundir import RunDir, atomic_write

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
E164 = r"^\+[1-9][0-9]{1,14}$"
NOT_FOUND = "PhoneNumberNotFound"
RESOURCE_TYPES = ("VOICE_PHONE_NUMBER", "WHATSAPP_MESSAGING_PHONE_NUMBER")


@dataclass(frozen=True, slots=True)
class Directory:
    """An instance's claimed numbers: E.164 -> [ID, ARN], and ID -> E.164."""

    by_e164: dict[str, list[str]]
    by_id: dict[str, str]


class FlowAssociations(Job):
    name = "flow-associations"
    summary = "BatchGetFlowAssociation: which flow each phone number is associated with"
    columns = (
        INSTANCE_COLUMN,
        Column("phone_number", ("phone_number_id", "phone_number_arn", "resource_id"),
               help="phone number ID (UUID), phone number ARN, or E.164 number"),
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
    def commands(cls) -> list[click.Command]:
        return [diff]

    @classmethod
    def cli_options(cls) -> list[click.Option]:
        return [
            job_option(
                "--resource-type", type=click.Choice(RESOURCE_TYPES),
                default="VOICE_PHONE_NUMBER", show_default=True,
                help="The ResourceType asked of BatchGetFlowAssociation.",
            )
        ]

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.resource_type = str(self.options["resource_type"])
        self._locks: dict[str, anyio.Lock] = {}
        self._directories: dict[str, Directory] = {}

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
            # +1 (555) 010-0000 and the like, as E.164: resolved per instance at run time.
            number.str.replace_all(r"[ ().\-]", "").alias("_e164"),
        )
        inst, num = pl.col("_instance"), pl.col("_number")
        quoted_number = pl.lit("'") + number + pl.lit("'")
        both_scoped = pl.col("_inst_region").is_not_null() & pl.col("_num_region").is_not_null()
        frame = frame.with_columns(first_reason(
            *instance_reasons(),
            (number.is_null(), pl.lit("phone_number is empty")),
            (num.is_null() & number.str.contains(E164_LIKE)
             & ~pl.col("_e164").str.contains(E164),
             pl.lit("phone_number ") + quoted_number
             + pl.lit(" is not a valid E.164 number (+ country code and number, at most 15 "
                      "digits)")),
            (num.is_null() & ~pl.col("_e164").str.contains(E164), pl.lit("phone_number ")
             + quoted_number
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
        e164 = pl.when(num.is_null()).then(pl.col("_e164"))
        items = frame.filter(pl.col("reason").is_null()).select(
            # A number given as E.164 is keyed by it until the instance's listing names its ID.
            pl.coalesce(num, pl.col("_e164")).alias("item_key"),
            pl.col("_instance").alias("instance_id"),
            pl.coalesce("_inst_region", "_num_region").alias("region"),
            pl.coalesce("_inst_account", "_num_account").alias("account_id"),
            "input_row",
            pl.col("_number").alias("phone_number_id"),
            e164.alias("phone_number"),
        )
        return Normalized(items=items, rejects=rejects)

    async def _directory(self, ctx: Context, batch: Batch) -> Directory:
        """Every number claimed in the batch's instance, both ways: listed with
        ListPhoneNumbersV2 once per instance and run (a lock per instance, so concurrent batches
        wait for one listing), noted page by page in the run directory so that a resumed run
        does not list again."""
        key = f"{batch.account_id}/{batch.region}/{batch.instance_id}"
        if key in self._directories:
            return self._directories[key]
        lock = self._locks.setdefault(key, anyio.Lock())
        async with lock:
            if key not in self._directories:
                listing = await self._list(ctx, batch, key)
                self._directories[key] = Directory(
                    by_e164=listing, by_id={entry[0]: e164 for e164, entry in listing.items()})
        return self._directories[key]

    async def _list(self, ctx: Context, batch: Batch, key: str) -> dict[str, list[str]]:
        """E.164 -> [ID, ARN] of the instance's claimed numbers, every page. Each page is noted
        as it comes, with the token of the next, so a killed listing goes on where it was."""
        directory: dict[str, list[str]] = {}
        token = None
        page_number = 0
        while True:
            page_number += 1
            noted = ctx.notes.get("numbers-page", f"{key}#{page_number}")
            if noted is None:
                params: dict[str, Any] = {"InstanceId": batch.instance_id, "MaxResults": 1000}
                if token:
                    params["NextToken"] = token
                page = await ctx.aws.call("connect", "ListPhoneNumbersV2", region=batch.region,
                                          account=batch.account_id, **params)
                noted = {
                    "numbers": {
                        number["PhoneNumber"]: [number["PhoneNumberId"].lower(),
                                                number["PhoneNumberArn"]]
                        for number in page.data.get("ListPhoneNumbersSummaryList", [])
                    },
                    "next": page.data.get("NextToken"),
                }
                ctx.notes.put("numbers-page", f"{key}#{page_number}", noted)
            directory.update(noted["numbers"])
            token = noted["next"]
            if not token:
                return directory

    async def process(self, batch: Batch, ctx: Context) -> list[Outcome]:
        outcomes: list[Outcome] = []
        ids: dict[str, str] = {}  # item_key -> phone number ID
        numbers: dict[str, str] = {}  # phone number ID -> E.164, where known
        if any(item.item_key.startswith("+") for item in batch.items):
            directory = await self._directory(ctx, batch)
            numbers = directory.by_id
            for item in batch.items:
                if not item.item_key.startswith("+"):
                    ids[item.item_key] = item.item_key
                elif item.item_key in directory.by_e164:
                    ids[item.item_key] = directory.by_e164[item.item_key][0]
                else:
                    outcomes.append(Failure(item, ClientFault(
                        NOT_FOUND, f"{item.item_key} is not claimed in instance "
                        f"{batch.instance_id} ({batch.region})")))
        else:
            ids = {item.item_key: item.item_key for item in batch.items}
        if not ids:
            return outcomes
        # The model's ResourceIds shape is ARN (resourceArnListMaxLimit100): ask with ARNs,
        # built from the instance's partition, region and account where the input gave an ID.
        arns = {number_id: number_arn(batch, number_id) for number_id in ids.values()}
        answer = await ctx.aws.call(
            "connect", self.operation, region=batch.region, account=batch.account_id,
            InstanceId=batch.instance_id,
            ResourceIds=list(arns.values()),
            ResourceType=self.resource_type,
        )
        by_id = {
            summary["ResourceId"].rsplit("/", 1)[-1].lower(): summary
            for summary in answer.data.get("FlowAssociationSummaryList", [])
        }
        for item in batch.items:
            if item.item_key not in ids:
                continue
            number_id = ids[item.item_key]
            summary = by_id.get(number_id)
            arn = summary["ResourceId"] if summary else arns[number_id]
            outcomes.append(Success(item, {
                "instance_id": batch.instance_id,
                "phone_number_id": number_id,
                "phone_number_arn": arn,
                "phone_number": item.data.get("phone_number") or numbers.get(number_id),
                "resource_type": self.resource_type,
                "flow_id": summary.get("FlowId") if summary else None,
                "associated": summary is not None,
                "region": batch.region,
                "account_id": batch.account_id,
            }, answer.attempts))
        return outcomes


JOB = FlowAssociations


def number_arn(batch: Batch, number_id: str) -> str:
    return (f"arn:{partition_of(batch.region)}:connect:{batch.region}:{batch.account_id}:"
            f"phone-number/{number_id}")


FINISHED = ("succeeded", "completed_with_failures")


def diff_report(run_a: Path, run_b: Path, out: Path) -> dict[str, Any]:
    """``connect-bulk diff``: the changes between two runs' results, written to ``out``, with
    the counts and what makes the comparison partial (a run that did not finish)."""
    frames, unfinished = [], []
    for path in (run_a, run_b):
        rundir = RunDir(path)
        run = rundir.read_run()
        if run.get("job") != FlowAssociations.name:
            raise UsageError(f"{path}: diff compares flow-associations runs, this is "
                             f"{run.get('job')}")
        if not rundir.results.is_file():
            raise UsageError(f"{path}: no results.parquet yet (resume the run first)")
        summary = rundir.read_summary()
        state = summary.get("state")
        if state not in FINISHED or summary.get("items_pending"):
            unfinished.append(f"{path} did not finish ({state}, {summary.get('items_pending')} "
                              "items pending): numbers without a result there are not compared")
        frames.append(pl.read_parquet(rundir.results))
    changes, not_compared = diff_runs(*frames)
    with atomic_write(out) as tmp:
        changes.write_parquet(tmp)
    counts = {change: int((changes["change"] == change).sum())
              for change in ("added", "removed", "changed")}
    return {"counts": counts | {"not_compared": not_compared}, "total": changes.height,
            "out": str(out), "unfinished": unfinished}


def diff_runs(before: pl.DataFrame, after: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """What changed between two runs' results, on the numbers that have a result in both:
    associations ``added``, ``removed``, and ``changed`` (re-pointed to another flow); and how
    many numbers had a result in only one of them (not compared: a number missing from a run
    is unknown there, not unassociated)."""
    key = ["instance_id", "phone_number_id"]
    columns = [*key, "phone_number_arn", "flow_id"]
    a = before.select(columns).unique(key)
    b = after.select(columns).unique(key)
    joined = a.join(b, on=key, how="inner", suffix="_after").rename(
        {"flow_id": "flow_id_before"})
    not_compared = a.height + b.height - 2 * joined.height
    change = (
        pl.when(pl.col("flow_id_before").is_null() & pl.col("flow_id_after").is_not_null())
        .then(pl.lit("added"))
        .when(pl.col("flow_id_before").is_not_null() & pl.col("flow_id_after").is_null())
        .then(pl.lit("removed"))
        .when(pl.col("flow_id_before") != pl.col("flow_id_after"))
        .then(pl.lit("changed"))
        .otherwise(None)
    )
    changes = (
        joined.with_columns(
            change.alias("change"),
            pl.coalesce("phone_number_arn_after", "phone_number_arn").alias("phone_number_arn"),
        )
        .filter(pl.col("change").is_not_null())
        .select(*key, "phone_number_arn", "change", "flow_id_before", "flow_id_after")
        .sort("change", *key)
    )
    return changes, not_compared


@click.command()
@click.argument("run_a", type=click.Path(file_okay=False, path_type=Path))
@click.argument("run_b", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Where to write the changes (default RUN_B/diff.parquet).")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@edge
def diff(*, run_a: Path, run_b: Path, out_path: Path | None, as_json: bool) -> None:
    """What changed from flow-associations run A to run B: associations added, removed, and
    re-pointed (changed), on the numbers both runs have a result for. Exit 1 when either run
    did not finish."""
    report = diff_report(run_a, run_b, out_path or run_b / "diff.parquet")
    counts = report["counts"]
    if as_json:
        click.echo(json.dumps(counts | {k: v for k, v in report.items() if k != "counts"}))
    else:
        for warning in report["unfinished"]:
            click.echo(f"warning: {warning}", err=True)
        click.echo(f"{counts['added']} added, {counts['removed']} removed, {counts['changed']} "
                   f"changed; {counts['not_compared']} not compared (no result in one of the "
                   f"runs); written to {report['out']}")
    sys.exit(1 if report["unfinished"] else 0)
