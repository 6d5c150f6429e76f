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
from operator import attrgetter
from pathlib import Path
from typing import Any, ClassVar

import click
import polars as pl
from connect_bulk.pipeline.edge import edge
from connect_bulk.pipeline.errors import ClientFault, UsageError
from connect_bulk.pipeline.job import Answered, Batch, Context, Job, Normalized, Outcome
from connect_bulk.pipeline.options import job_option
from connect_bulk.pipeline.rundir import RunDir, atomic_write

from ._flows import Flows, list_flows
from ._instances import INSTANCE_COLUMN, describe_alias, first_reason
from ._listing import PerInstance, ahead
from ._numbers import (
    NUMBER_COLUMN,
    NumberDirectory,
    normalize_numbers,
    number_arn,
    number_columns,
    number_item_columns,
    number_reasons,
    number_schema,
)

RESOURCE_TYPES = ("VOICE_PHONE_NUMBER", "WHATSAPP_MESSAGING_PHONE_NUMBER")


DATA = attrgetter("data")


class FlowAssociations(Job):
    name = "flow-associations"
    summary = "BatchGetFlowAssociation: which flow each phone number is associated with"
    columns = (INSTANCE_COLUMN, NUMBER_COLUMN)
    operation = "BatchGetFlowAssociation"
    batch_size = 100
    # The first batches of each instance wait for its look-ups (alias, flow names) before
    # their call: four batches in flight a call slot keep the slots calling meanwhile (with
    # 100 ms a call, 0.97 of a bare loop's rate against 0.47 with one batch a slot).
    batches_per_slot = 4
    split_codes = frozenset(
        {"ResourceNotFoundException", "InvalidParameterException", "InvalidRequestException"}
    )
    result_schema: ClassVar[dict[str, Any]] = number_schema(
        resource_type=pl.String, flow_id=pl.String, flow_name=pl.String, associated=pl.Boolean)

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
            ),
            job_option("--flow-names/--no-flow-names", default=True, show_default=True,
                       help="Name each number's flow (ListContactFlows, once per instance)."),
        ]

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.resource_type = str(self.options["resource_type"])
        self.flow_names = bool(self.options["flow_names"])
        self._numbers = NumberDirectory()
        self._flows = PerInstance(list_flows)
        self._aliases = PerInstance(describe_alias)

    async def _flow_names(self, ctx: Context, batch: Batch) -> Flows | None:
        """The instance's flows, for their names; a listing refused (no such instance, not
        allowed) leaves the names empty, it fails no number: BatchGetFlowAssociation answers."""
        if not self.flow_names:
            return None
        try:
            return await self._flows.of(ctx, batch)
        except ClientFault:
            return None

    async def look_ahead(self, batch: Batch, ctx: Context) -> None:
        await ahead(ctx, batch, self._numbers, self._aliases,
                    *([self._flows] if self.flow_names else []))

    def calls_per_instance(self) -> dict[str, float]:
        return {"DescribeInstance": 1.0} | ({"ListContactFlows": 1.0} if self.flow_names else {})

    def normalize(self, frame: pl.LazyFrame) -> Normalized:
        frame = normalize_numbers(frame)
        frame = frame.with_columns(first_reason(*number_reasons()))
        rejects = frame.filter(pl.col("reason").is_not_null()).select("input_row", "reason")
        items = frame.filter(pl.col("reason").is_null()).select(*number_item_columns())
        return Normalized(items=items, rejects=rejects)

    async def process(self, batch: Batch, ctx: Context) -> list[Outcome]:
        resolved = await self._numbers.resolve(ctx, batch)
        outcomes: list[Outcome] = list(resolved.failures)
        ids = resolved.ids
        if not ids:
            return outcomes
        # Names first: a stop during a look-up then loses no answered call.
        alias = await self._aliases.of(ctx, batch)
        flows = await self._flow_names(ctx, batch)
        # The model's ResourceIds shape is ARN (resourceArnListMaxLimit100): ask with ARNs,
        # built from the instance's partition, region and account where the input gave an ID.
        prefix = number_arn(batch, "")
        number_ids = list(ids.values())  # the batch's numbers but those that failed, in order
        arns = [prefix + number_id for number_id in number_ids]
        answer = await ctx.aws.call(
            "connect", self.operation, region=batch.region, account=batch.account_id,
            InstanceId=batch.instance_id, ResourceIds=arns, ResourceType=self.resource_type,
        )
        # A hundred numbers answered at once: their rows are made a column at a time, and
        # each summary found by the ARN asked for.
        listed = answer.data.get("FlowAssociationSummaryList") or []
        by_arn = {summary["ResourceId"]: summary for summary in listed}
        summaries = list(map(by_arn.get, arns))
        if len(summaries) - summaries.count(None) < len(by_arn):
            # A summary names its number otherwise than asked (another case, or its ID):
            # found by the number's ID, and named as answered.
            by_id = {summary["ResourceId"].rsplit("/", 1)[-1].lower(): summary
                     for summary in listed}
            summaries = list(map(by_id.get, number_ids))
            arns = [summary["ResourceId"] if summary else arn
                    for summary, arn in zip(summaries, arns, strict=True)]
        items = [item for item in batch.items if item.item_key in ids] \
            if outcomes else list(batch.items)
        flow_ids = [summary.get("FlowId") if summary else None for summary in summaries]
        # E.164 numbers where the input or the instance's listing gave them (none when the
        # input gave IDs: its numbers carry no data); a flow's name once per flow.
        e164: list[str | None] = [
            item.data.get("phone_number") or resolved.e164.get(number_id)
            for item, number_id in zip(items, number_ids, strict=True)] \
            if resolved.e164 or any(map(DATA, items)) else [None] * len(items)
        names = {flow_id: flows.name_of(flow_id) for flow_id in set(flow_ids)} if flows else {}
        columns = number_columns(batch, number_ids, alias=alias, e164=e164, arns=arns)
        columns |= {
            "resource_type": [self.resource_type] * len(items),
            "flow_id": flow_ids,
            "flow_name": list(map(names.get, flow_ids)),
            "associated": [summary is not None for summary in summaries],
        }
        outcomes.append(Answered(items, columns, answer.attempts))
        return outcomes


JOB = FlowAssociations


FINISHED = ("succeeded", "completed_with_failures")
# Runs whose results say, per number, the flow it points at (``flow_id``): this job's, and a
# migration's (its verified target).
DIFFABLE = ("flow-associations", "associate-flows")


def diff_report(run_a: Path, run_b: Path, out: Path) -> dict[str, Any]:
    """``connect-bulk diff``: the changes between two runs' results, written to ``out``, with
    the counts and what makes the comparison partial (a run that did not finish)."""
    frames, unfinished = [], []
    for path in (run_a, run_b):
        rundir = RunDir(path)
        run = rundir.read_run()
        if run.get("job") not in DIFFABLE:
            raise UsageError(f"{path}: diff compares flow-associations and associate-flows "
                             f"runs, this is {run.get('job')}")
        if run.get("job_options", {}).get("dry_run"):
            raise UsageError(f"{path}: a dry run changed nothing; its flows are not what the "
                             "numbers point at")
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
    """What changed from run A to run B (flow-associations, or associate-flows): associations
    added, removed, and re-pointed (changed), on the numbers both runs have a result for. Exit 1
    when either run did not finish."""
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
