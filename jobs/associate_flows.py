"""associate-flows: point phone numbers at contact flows, as a migration does, and keep the
state found before so that it can be rolled back exactly.

Per batch (at most 100 numbers of one instance):

1. Snapshot: ``BatchGetFlowAssociation`` (with ARNs), noted in the run directory (fsynced)
   before any change. A resumed run keeps the state noted before its first change, never the
   state it made itself; the same call tells which numbers still need a change.
2. ``AssociatePhoneNumberContactFlow`` for each number not already on its target,
   ``DisassociatePhoneNumberContactFlow`` where an empty flow asks for it
   (``--allow-disassociate``), each under its own (operation, account, region) limiter.
3. Verify: ``BatchGetFlowAssociation`` again; a number not on its target is a retryable failure
   ``VerificationFailed``.

Flows are given by ID, ARN or exact name; names are resolved per instance with
``ListContactFlows`` (once per instance and run). ``--dry-run`` makes the snapshot only.
``rollback.parquet`` (written at the end of every run) holds, for every number the run changed,
the flow it had before; ``connect-bulk rollback RUN_DIR`` applies it as a new run.
https://docs.aws.amazon.com/connect/latest/APIReference/API_AssociatePhoneNumberContactFlow.html
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import click
import polars as pl
from connect_bulk.pipeline.edge import edge, is_tty
from connect_bulk.pipeline.errors import (
    AccessDenied,
    ClientFault,
    TransientError,
    UsageError,
)
from connect_bulk.pipeline.job import (
    Batch,
    Column,
    Context,
    Failure,
    Item,
    Job,
    Normalized,
    Outcome,
    Success,
)
from connect_bulk.pipeline.options import job_option
from connect_bulk.pipeline.rundir import RunDir, atomic_write

from ._flows import Flow, Flows, list_flows
from ._instances import INSTANCE_COLUMN, PARTITION, UUID, describe_alias, first_reason
from ._listing import PerInstance, ahead
from ._numbers import (
    NUMBER_COLUMN,
    NumberDirectory,
    normalize_numbers,
    number_arn,
    number_item_columns,
    number_reasons,
    number_row,
    number_schema,
)

FLOW_ARN = (rf"^arn:(?:{PARTITION}):connect:[a-z0-9-]+:\d{{12}}:instance/({UUID})/"
            rf"contact-flow/({UUID})$")
SNAPSHOT = "BatchGetFlowAssociation"
ASSOCIATE = "AssociatePhoneNumberContactFlow"
DISASSOCIATE = "DisassociatePhoneNumberContactFlow"
CHANGED = ("associated", "disassociated")


class VerificationFailed(TransientError):
    """The number is not on its target after the change: worth another try."""


class AssociateFlows(Job):
    name = "associate-flows"
    summary = ("AssociatePhoneNumberContactFlow: point numbers at flows, with a snapshot before, "
               "verification after, a dry run and an exact rollback")
    columns = (
        INSTANCE_COLUMN,
        NUMBER_COLUMN,
        Column("flow", ("flow_id", "flow_arn", "flow_name", "contact_flow", "contact_flow_id",
                        "contact_flow_name"),
               help="flow ID, flow ARN or exact flow name; empty: no flow "
                    "(with --allow-disassociate)"),
    )
    operation = SNAPSHOT
    batch_size = 100
    mutating = True
    split_codes = frozenset(
        {"ResourceNotFoundException", "InvalidParameterException", "InvalidRequestException"}
    )
    result_schema: ClassVar[dict[str, Any]] = number_schema(
        flow_id_before=pl.String, flow_name_before=pl.String, flow_id=pl.String,
        flow_name=pl.String, outcome=pl.String, verified=pl.Boolean)

    @classmethod
    def cli_options(cls) -> list[click.Option]:
        return [
            job_option("--dry-run", is_flag=True, default=False,
                       help="Snapshot only: say what would change, change nothing."),
            job_option("--allow-disassociate", is_flag=True, default=False,
                       help="An empty flow removes the number's flow "
                            "(DisassociatePhoneNumberContactFlow)."),
        ]

    @classmethod
    def commands(cls) -> list[click.Command]:
        return [rollback]

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.dry_run = bool(self.options["dry_run"])
        self.allow_disassociate = bool(self.options["allow_disassociate"])
        self._numbers = NumberDirectory()
        self._flows = PerInstance(list_flows)
        self._aliases = PerInstance(describe_alias)

    @property
    def changes_state(self) -> bool:
        return not self.dry_run

    async def look_ahead(self, batch: Batch, ctx: Context) -> None:
        await ahead(ctx, batch, self._numbers, self._flows, self._aliases)

    def calls_per_batch(self) -> dict[str, float]:
        return {SNAPSHOT: 1.0 if self.dry_run else 2.0}

    def calls_per_item(self) -> dict[str, float]:
        # An upper bound: a number already on its target is not called.
        return {} if self.dry_run else {ASSOCIATE: 1.0}

    def calls_per_instance(self) -> dict[str, float]:
        return {"ListContactFlows": 1.0, "DescribeInstance": 1.0}

    def across_rows(self, items: pl.DataFrame) -> pl.DataFrame:
        return _conflicts(items)

    def describe(self, items: pl.DataFrame) -> list[str]:
        counts = (items.group_by("instance_id", "flow").len()
                  .sort("len", "instance_id", "flow", descending=[True, False, False],
                        nulls_last=True))
        lines = [f"  {row['len']} numbers of instance {row['instance_id']} -> "
                 f"{_shown_flow(row['flow'])}" for row in counts.head(20).iter_rows(named=True)]
        if counts.height > 20:
            lines.append(f"  ... and {counts.height - 20} more (instance, flow) pairs")
        return lines

    # -- input ------------------------------------------------------------------------------

    def normalize(self, frame: pl.LazyFrame) -> Normalized:
        flow = pl.col("flow")
        frame = normalize_numbers(frame).with_columns(
            pl.when(flow.str.contains(f"^{UUID}$")).then(pl.lit("id:") + flow.str.to_lowercase())
            .when(flow.str.contains(FLOW_ARN))
            .then(pl.lit("id:") + flow.str.extract(FLOW_ARN, 2).str.to_lowercase())
            .when(flow.is_not_null()).then(pl.lit("name:") + flow)
            .otherwise(None).alias("_flow"),
            flow.str.extract(FLOW_ARN, 1).str.to_lowercase().alias("_flow_instance"),
        )
        frame = frame.with_columns(first_reason(
            *number_reasons(),
            (flow.is_null() & pl.lit(not self.allow_disassociate),
             pl.lit("flow is empty: give a flow, or --allow-disassociate to remove the "
                    "number's flow")),
            (pl.col("_flow_instance").is_not_null()
             & (pl.col("_flow_instance") != pl.col("_instance")),
             pl.lit("flow ARN names instance ") + pl.col("_flow_instance") + pl.lit(", not ")
             + pl.col("_instance")),
        ))
        rejects = frame.filter(pl.col("reason").is_not_null()).select("input_row", "reason")
        items = frame.filter(pl.col("reason").is_null()).select(
            *number_item_columns(), pl.col("_flow").alias("flow"))
        return Normalized(items=items, rejects=rejects)

    # -- calls ------------------------------------------------------------------------------

    async def process(self, batch: Batch, ctx: Context) -> list[Outcome]:
        resolved = await self._numbers.resolve(ctx, batch)
        outcomes: list[Outcome] = list(resolved.failures)
        flows = await self._flows.of(ctx, batch)
        alias = await self._aliases.of(ctx, batch)
        work: list[tuple[Item, str, Flow | None]] = []
        for item in batch.items:
            if item.item_key not in resolved.ids:
                continue
            target = _target(item, flows, batch)
            if isinstance(target, Failure):
                outcomes.append(target)
            else:
                work.append((item, resolved.ids[item.item_key], target))
        if not work:
            return outcomes
        try:
            return await self._migrate(ctx, batch, work, outcomes, resolved.e164, flows, alias)
        finally:
            ctx.phases.clear(batch.batch_id)

    async def _migrate(self, ctx: Context, batch: Batch, work: list[tuple[Item, str, Flow | None]],
                       outcomes: list[Outcome], e164: dict[str, str], flows: Flows,
                       alias: str | None) -> list[Outcome]:
        """Snapshot, change, verify: each a phase the progress bar shows."""
        ctx.phases.set(batch.batch_id, "snapshot")
        current = await self._snapshot(ctx, batch, [number for _, number, _ in work])
        before = await self._before(ctx, batch, current)
        for item, number, target in work:
            row = number_row(batch, number, alias=alias,
                             e164=item.data.get("phone_number") or e164.get(number)) | {
                "flow_id_before": before[number],
                "flow_name_before": flows.name_of(before[number]),
                "flow_id": target.arn if target else None,
                "flow_name": target.name if target else None,
            }
            needs_call = _flow_id(current[number]) != (target.id if target else None)
            if self.dry_run:
                row |= {"outcome": (("would_associate" if target else "would_disassociate")
                                    if needs_call else "unchanged"), "verified": None}
                outcomes.append(Success(item, row, 1))
                continue
            ctx.phases.set(batch.batch_id, "changing")
            outcome = await self._change(ctx, batch, item, number, target, needs_call, row)
            outcomes.append(outcome)
        if self.dry_run:
            return outcomes
        ctx.phases.set(batch.batch_id, "verifying")
        return await self._verify(ctx, batch, outcomes)

    async def _snapshot(self, ctx: Context, batch: Batch, numbers: list[str]) -> dict[str, Any]:
        """Number ID -> the flow ARN it is associated with, or None."""
        arns = {number: number_arn(batch, number) for number in numbers}
        answer = await ctx.aws.call(
            "connect", SNAPSHOT, region=batch.region, account=batch.account_id,
            InstanceId=batch.instance_id, ResourceIds=list(dict.fromkeys(arns.values())),
            ResourceType="VOICE_PHONE_NUMBER")
        found = {summary["ResourceId"].rsplit("/", 1)[-1].lower(): summary.get("FlowId")
                 for summary in answer.data.get("FlowAssociationSummaryList", [])}
        return {number: found.get(number) for number in numbers}

    async def _before(self, ctx: Context, batch: Batch, current: dict[str, Any]
                      ) -> dict[str, Any]:
        """The flow each number had before this run changed anything: noted the first time it
        is seen (fsynced, before any change), read back ever after."""
        key = f"{batch.account_id}/{batch.region}/{batch.instance_id}"
        noted = {number: ctx.notes.get("before", f"{key}/{number}") for number in current}
        fresh = {f"{key}/{number}": {"flow": flow} for number, flow in current.items()
                 if noted[number] is None}
        if fresh and not self.dry_run:
            await ctx.notes.put_many("before", fresh)
        return {number: (noted[number] or {"flow": current[number]})["flow"]
                for number in current}

    async def _change(self, ctx: Context, batch: Batch, item: Item, number: str,
                      target: Flow | None, needs_call: bool, row: dict[str, Any]) -> Outcome:
        attempts = 1
        if needs_call:
            params: dict[str, Any] = {"PhoneNumberId": number, "InstanceId": batch.instance_id}
            if target is not None:
                params["ContactFlowId"] = target.id
            try:
                answer = await ctx.aws.call(
                    "connect", ASSOCIATE if target else DISASSOCIATE, region=batch.region,
                    account=batch.account_id, **params)
            except AccessDenied:
                raise  # the credentials, not the number: the engine's access-denied rule
            except (ClientFault, TransientError) as error:
                return Failure(item, error)  # this number only; the batch goes on
            attempts = answer.attempts
        target_id = target.id if target else None
        unchanged = _flow_id(row["flow_id_before"]) == target_id
        row["outcome"] = "unchanged" if unchanged else (
            "associated" if target else "disassociated")
        return Success(item, row, attempts)

    async def _verify(self, ctx: Context, batch: Batch,
                      outcomes: list[Outcome]) -> list[Outcome]:
        done = [o for o in outcomes if isinstance(o, Success)]
        if not done:
            return outcomes
        after = await self._snapshot(ctx, batch, [o.row["phone_number_id"] for o in done])
        verified: list[Outcome] = [o for o in outcomes if not isinstance(o, Success)]
        for outcome in done:
            row = dict(outcome.row)
            now = _flow_id(after[row["phone_number_id"]])
            if now == _flow_id(row["flow_id"]):
                verified.append(Success(outcome.item, row | {"verified": True},
                                        outcome.attempts))
            else:
                verified.append(Failure(outcome.item, VerificationFailed(
                    "VerificationFailed", f"{row['phone_number_id']} is on "
                    f"{after[row['phone_number_id']] or 'no flow'}, not on "
                    f"{row['flow_id'] or 'no flow'}, after the change")))
        return verified

    def finish(self, run_dir: Path, results: pl.DataFrame) -> None:
        """``rollback.parquet``: every number this run changed, and the flow it had before."""
        changed = results.filter(pl.col("outcome").is_in(list(CHANGED))) if results.height \
            else pl.DataFrame(schema={"instance_id": pl.String,
                                      "phone_number_arn": pl.String,
                                      "flow_id_before": pl.String})
        frame = changed.select(
            "instance_id", pl.col("phone_number_arn").alias("phone_number"),
            pl.col("flow_id_before").alias("flow"))
        with atomic_write(run_dir / "rollback.parquet") as tmp:
            frame.write_parquet(tmp)


JOB = AssociateFlows


def _conflicts(items: pl.DataFrame) -> pl.DataFrame:
    """The same number given different flows: every such row is refused, naming the others."""
    key = ["instance_id", "item_key"]
    clashes = items.filter(pl.col("flow").n_unique().over(key) > 1)
    if clashes.is_empty():
        return clashes.select("input_row", pl.lit(None, dtype=pl.String).alias("reason"))
    rows = pl.col("input_row").cast(pl.String).str.join(", ").over(key)
    number = pl.coalesce("phone_number", "item_key")
    return clashes.sort("input_row").select(
        "input_row",
        (pl.lit("phone_number ") + number + pl.lit(" is given different flows on rows ") + rows)
        .alias("reason"))


def _target(item: Item, flows: Flows, batch: Batch) -> Flow | Failure | None:
    """The flow an item asks for (None: no flow), or why it cannot be had."""
    given = item.data.get("flow")
    if not given:
        return None
    kind, _, value = str(given).partition(":")
    if kind == "id":
        flow = flows.by_id.get(value)
        if flow is None:
            return Failure(item, ClientFault("FlowNotFound", f"flow {value} is not in instance "
                                             f"{batch.instance_id}"))
        return flow
    named = flows.by_name.get(value, [])
    if not named:
        return Failure(item, ClientFault("FlowNotFound", f"no flow named {value!r} in instance "
                                         f"{batch.instance_id}"))
    if len(named) > 1:
        return Failure(item, ClientFault(
            "FlowNameAmbiguous", f"{len(named)} flows are named {value!r} in instance "
            f"{batch.instance_id} ({', '.join(f.id for f in named)}): give the flow's ID"))
    return named[0]


def _flow_id(arn: str | None) -> str | None:
    return arn.rsplit("/", 1)[-1].lower() if arn else None


def _shown_flow(flow: str | None) -> str:
    if not flow:
        return "no flow (disassociate)"
    kind, _, value = flow.partition(":")
    return f"flow {value!r}" if kind == "name" else f"flow {value}"


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--yes", is_flag=True, help="Skip the confirmation asked on a TTY.")
@click.option("--dry-run", is_flag=True, help="Say what the rollback would change, only.")
@edge
def rollback(*, run_dir: Path, yes: bool, dry_run: bool) -> None:
    """associate-flows: put every number a run changed back to the flow it had before (or no
    flow), as a new run <run_id>-rollback with the same AWS options."""
    log_format = "text" if is_tty() else "json"
    interactive = sys.stdin.isatty() and sys.stderr.isatty()
    confirm = (lambda text: click.confirm(text, err=True)) if interactive else None
    sys.exit(rollback_run(run_dir, yes=yes, dry_run=dry_run, confirm=confirm,
                          log_format=log_format, progress=log_format == "text"))


def rollback_run(run_dir: Path, *, yes: bool, dry_run: bool,
                 confirm: Callable[[str], bool] | None, log_format: str,
                 progress: bool) -> int:
    """Start ``<run_id>-rollback``: associate-flows over the run's ``rollback.parquet``, with
    the run's AWS options; 0 when there is nothing to roll back."""
    from connect_bulk.pipeline.record import RunOptions
    from connect_bulk.pipeline.runs import start

    run = RunDir(run_dir).read_run()
    if run.get("job") != AssociateFlows.name:
        raise UsageError(f"{run_dir}: rollback undoes associate-flows runs, this is "
                         f"{run.get('job')}")
    plan = run_dir / "rollback.parquet"
    if not plan.is_file():
        raise UsageError(f"{plan}: missing (the run has not finished an execution yet)")
    if pl.scan_parquet(plan).select(pl.len()).collect().item() == 0:
        click.echo(f"{run_dir.name} changed no number: nothing to roll back")
        return 0
    options = RunOptions.from_json(
        run["options"], out=str(run_dir.parent), yes=yes, deadline=None,
        run_id=f"{run['run_id']}-rollback" + ("-dry-run" if dry_run else ""),
        log_format=log_format, progress=progress)
    return start(AssociateFlows.name, plan, {"allow_disassociate": True, "dry_run": dry_run},
                 options, confirm=confirm)
