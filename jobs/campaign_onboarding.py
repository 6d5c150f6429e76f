"""campaign-onboarding: onboard instances to Amazon Connect outbound campaigns, with KMS
encryption, and follow each onboarding job to its end.

One instance a batch. The lifecycle, per instance:

1. Look the job up first (``GetInstanceOnboardingJobStatus``), never start blindly: a start on
   an instance that is already onboarded or onboarding would either answer that job's status or,
   with another encryption config, a ``ConflictException``; the look-up is read-only, reports the
   existing job as ``already_onboarded``, and lets a second run of the same input start nothing.
   https://docs.aws.amazon.com/connect-outbound/latest/APIReference/API_GetInstanceOnboardingJobStatus.html
2. A 404 there means no job is kept: never onboarded, or onboarded so long ago that AWS no longer
   keeps the job's status. ``GetConnectInstanceConfig`` tells them apart before anything starts.
3. A FAILED job (AWS keeps it 14 days) is a failure with its failure code; with
   ``--reset-failed``, or when the code is ``INTERNAL_FAILURE`` (AWS's side, worth another try),
   it is deleted and started again (``reset_and_started``).
4. ``StartInstanceOnboardingJob``; the start is noted in the run directory at once, so that a
   resumed run goes on waiting for it instead of looking it up as someone else's.
5. With ``--wait``, poll the status (rate-limited like every call) at growing intervals until
   SUCCEEDED or FAILED, or ``--wait-timeout`` (the result then says IN_PROGRESS).
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import anyio
import click
import polars as pl
from connect_bulk.pipeline.durations import parse_duration
from connect_bulk.pipeline.errors import (
    Abandoned,
    ClientFault,
    TerminalError,
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

from ._instances import (
    INSTANCE_COLUMN,
    describe_alias,
    first_reason,
    instance_reasons,
    normalize_instances,
)
from ._listing import PerInstance

KMS_ARN = (
    r"^arn:(?:aws|aws-cn|aws-us-gov|aws-iso|aws-iso-b):kms:[a-z0-9-]+:\d{12}:"
    r"(?:key/[A-Za-z0-9-]{1,128}|alias/[A-Za-z0-9/_-]{1,250})$"
)
# https://docs.aws.amazon.com/connect-outbound/latest/APIReference/API_InstanceOnboardingJobStatus.html
RETRYABLE_FAILURES = frozenset({"INTERNAL_FAILURE"})
FAILURE_CODES = frozenset({
    "EVENT_BRIDGE_ACCESS_DENIED", "EVENT_BRIDGE_MANAGED_RULE_LIMIT_EXCEEDED", "IAM_ACCESS_DENIED",
    "KMS_ACCESS_DENIED", "KMS_KEY_NOT_FOUND", "INTERNAL_FAILURE", "UNKNOWN_FAILURE",
})
POLL_INTERVALS_S = (1.0, 2.0, 4.0, 8.0, 15.0)
NOT_FOUND = frozenset({"ResourceNotFoundException"})


class OnboardingFailed(TerminalError):
    """The onboarding job ended FAILED; ``code`` is its failure code."""


class OnboardingFailedTransient(TransientError):
    """FAILED with INTERNAL_FAILURE: a redrive resets it and starts again."""


def failed(code: str, message: str) -> TerminalError | TransientError:
    kind = OnboardingFailedTransient if code in RETRYABLE_FAILURES else OnboardingFailed
    return kind(code, message)


class CampaignOnboarding(Job):
    name = "campaign-onboarding"
    summary = "StartInstanceOnboardingJob: onboard instances to outbound campaigns, with KMS"
    columns = (
        INSTANCE_COLUMN,
        Column("kms_key_arn", ("key_arn",), required=False,
               help="KMS key ARN or alias ARN for that instance; empty: --kms-key-arn"),
    )
    operation = "StartInstanceOnboardingJob"
    batch_size = 1
    mutating = True
    # A batch mostly waits between status polls, holding no call slot.
    max_in_flight = 2000
    redrive_options = frozenset({"reset_failed"})
    result_schema: ClassVar[dict[str, Any]] = {
        "instance_id": pl.String,
        "instance_alias": pl.String,
        "region": pl.String,
        "account_id": pl.String,
        "encryption_enabled": pl.Boolean,
        "kms_key_arn": pl.String,
        "status": pl.String,
        "outcome": pl.String,
        # an instance already onboarded with another encryption config than this run asked
        "warning": pl.String,
    }

    @classmethod
    def cli_options(cls) -> list[click.Option]:
        option = job_option
        return [
            option("--kms-key-arn", default=None,
                   help="KMS key (or alias) ARN for rows without one."),
            option("--no-encryption", is_flag=True, default=False,
                   help="Onboard rows without a key unencrypted."),
            option("--wait/--no-wait", default=True, show_default=True,
                   help="Poll each job until SUCCEEDED or FAILED."),
            option("--wait-timeout", default="15m", show_default=True,
                   help="Stop waiting for a job after this; its result says IN_PROGRESS."),
            option("--reset-failed", is_flag=True, default=False,
                   help="Delete FAILED onboarding jobs and start them again."),
            option("--campaigns-api", type=click.Choice(["v1", "v2"]), default="v1",
                   show_default=True, help="connectcampaigns (v1) or connectcampaignsv2 (v2)."),
        ]

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        options = self.options
        key = options["kms_key_arn"]
        if key and not pl.Series([key]).str.contains(KMS_ARN).item():
            raise UsageError(f"--kms-key-arn {key!r} is not a KMS key ARN or alias ARN")
        if key and options["no_encryption"]:
            raise UsageError("--kms-key-arn and --no-encryption contradict each other")
        self.default_key: str | None = key
        self.no_encryption = bool(options["no_encryption"])
        self.wait = bool(options["wait"])
        self.wait_timeout_s = parse_duration(str(options["wait_timeout"]),
                                             option="--wait-timeout").total_seconds()
        self.reset_failed = bool(options["reset_failed"])
        api = options["campaigns_api"]
        self.service = "connectcampaignsv2" if api == "v2" else "connectcampaigns"
        self._aliases = PerInstance(describe_alias)

    def describe(self, items: pl.DataFrame) -> list[str]:
        keys = items.group_by("kms_key_arn").len().sort("len", descending=True)
        return [
            f"  {row['len']} onboarded with KMS key {row['kms_key_arn']}" if row["kms_key_arn"]
            else f"  {row['len']} onboarded without encryption"
            for row in keys.iter_rows(named=True)
        ] + [f"  API {self.service}, {'waiting for' if self.wait else 'not waiting for'} "
             "each job to finish"]

    def also_redrive(self) -> pl.Expr | None:
        # --reset-failed: a job that ended FAILED is deleted and started again on a redrive.
        return pl.col("error_code").is_in(list(FAILURE_CODES)) if self.reset_failed else None

    def calls_per_batch(self) -> dict[str, float]:
        calls = {"GetInstanceOnboardingJobStatus": 1.0 + (3.0 if self.wait else 0.0),
                 "GetConnectInstanceConfig": 1.0, self.operation: 1.0, "DescribeInstance": 1.0}
        return calls

    # -- input ------------------------------------------------------------------------------

    def normalize(self, frame: pl.LazyFrame) -> Normalized:
        key = pl.col("kms_key_arn")
        frame = normalize_instances(frame).with_columns(
            pl.coalesce(key, pl.lit(self.default_key, dtype=pl.String)).alias("_key")
        )
        frame = frame.with_columns(first_reason(
            *instance_reasons(),
            (key.is_not_null() & ~key.str.contains(KMS_ARN),
             pl.lit("kms_key_arn '") + key + pl.lit("' is not a KMS key ARN or alias ARN")),
            (pl.col("_key").is_null() & pl.lit(not self.no_encryption),
             pl.lit("no KMS key: give kms_key_arn, --kms-key-arn, or --no-encryption")),
        ))
        rejects = frame.filter(pl.col("reason").is_not_null()).select("input_row", "reason")
        items = frame.filter(pl.col("reason").is_null()).select(
            pl.col("_instance").alias("item_key"),
            pl.col("_instance").alias("instance_id"),
            pl.col("_inst_region").alias("region"),
            pl.col("_inst_account").alias("account_id"),
            "input_row",
            pl.col("_key").alias("kms_key_arn"),
        )
        return Normalized(items=items, rejects=rejects)

    # -- calls ------------------------------------------------------------------------------

    async def _call(self, ctx: Context, batch: Batch, operation: str, **params: Any) -> Any:
        return await ctx.aws.call(self.service, operation, region=batch.region,
                                  account=batch.account_id,
                                  connectInstanceId=batch.instance_id, **params)

    async def _look_up(self, ctx: Context, batch: Batch, operation: str,
                       key: str) -> dict[str, Any] | None:
        """A read whose 404 is an answer (nothing there), not a failure."""
        try:
            answer = await self._call(ctx, batch, operation, expected=NOT_FOUND)
        except ClientFault as error:
            if error.code in NOT_FOUND:
                return None
            raise
        found: dict[str, Any] = answer.data[key]
        return found

    async def _status(self, ctx: Context, batch: Batch) -> dict[str, Any] | None:
        return await self._look_up(ctx, batch, "GetInstanceOnboardingJobStatus",
                                   "connectInstanceOnboardingJobStatus")

    async def _config(self, ctx: Context, batch: Batch) -> dict[str, Any] | None:
        return await self._look_up(ctx, batch, "GetConnectInstanceConfig",
                                   "connectInstanceConfig")

    def _row(self, batch: Batch, encryption: dict[str, Any], status: str,
             outcome: str, wanted: dict[str, Any] | None = None) -> dict[str, Any]:
        """A result row; ``wanted`` (for an instance found onboarded) is compared with what
        it has, and a difference is the row's warning."""
        warning = None
        if wanted is not None and _config(encryption) != _config(wanted):
            warning = (f"already onboarded with {_config(encryption)}, not the "
                       f"{_config(wanted)} this run asked for; nothing was changed")
        return {
            "instance_id": batch.instance_id,
            "instance_alias": self._aliases.known(batch),
            "region": batch.region,
            "account_id": batch.account_id,
            "encryption_enabled": bool(encryption.get("enabled")),
            "kms_key_arn": encryption.get("keyArn"),
            "status": status,
            "outcome": outcome,
            "warning": warning,
        }

    def _wanted(self, item: Item) -> dict[str, Any]:
        key = item.data.get("kms_key_arn")
        return ({"enabled": True, "encryptionType": "KMS", "keyArn": key} if key
                else {"enabled": False})

    async def process(self, batch: Batch, ctx: Context) -> list[Outcome]:
        (item,) = batch.items
        wanted = self._wanted(item)
        await self._aliases.of(ctx, batch)  # named first: a stop then loses no answer
        # A job this run started before it was stopped is still this run's: resuming goes on
        # waiting for it and reports it as started, not as someone else's.
        noted = ctx.notes.get("started", batch.instance_id)
        status = await self._status(ctx, batch)
        if status is None:
            config = await self._config(ctx, batch)
            if config is not None:
                encryption = config.get("encryptionConfig", {})
                if noted:
                    row = self._row(batch, encryption, "SUCCEEDED", noted["outcome"])
                else:
                    row = self._row(batch, encryption, "SUCCEEDED", "already_onboarded", wanted)
                return [Success(item, row, 1)]
            return [await self._start(ctx, batch, item, wanted, "started")]
        if status["status"] == "FAILED":
            code = str(status.get("failureCode") or "UNKNOWN_FAILURE")
            if self.reset_failed or code in RETRYABLE_FAILURES:
                await self._call(ctx, batch, "DeleteInstanceOnboardingJob")
                return [await self._start(ctx, batch, item, wanted, "reset_and_started")]
            return [Failure(item, failed(code, f"the onboarding job is FAILED ({code}); "
                                               "--reset-failed deletes it and starts again"))]
        if noted:
            return [await self._follow(ctx, batch, item, noted["encryption"], noted["outcome"],
                                       status=status["status"])]
        config = await self._config(ctx, batch) if status["status"] == "SUCCEEDED" else None
        encryption = (config or {}).get("encryptionConfig", wanted)
        return [await self._follow(ctx, batch, item, encryption, "already_onboarded",
                                   status=status["status"], wanted=wanted)]

    async def _start(self, ctx: Context, batch: Batch, item: Item, wanted: dict[str, Any],
                     outcome: str) -> Outcome:
        try:
            answer = await self._call(ctx, batch, self.operation, encryptionConfig=wanted)
        except ClientFault as error:
            if error.code != "ConflictException":
                raise
            # Reported with the existing job's status, not retried: another config is there.
            existing = await self._status(ctx, batch)
            state = existing["status"] if existing else "unknown"
            return Failure(item, ClientFault(
                error.code, f"an onboarding job with another encryption config exists (status "
                f"{state}): {error.message}", http_status=error.http_status,
                attempts=error.attempts))
        await ctx.notes.put("started", batch.instance_id,
                            {"encryption": wanted, "outcome": outcome})
        status = answer.data["connectInstanceOnboardingJobStatus"]
        return await self._follow(ctx, batch, item, wanted, outcome, status=status["status"],
                                  failure=status.get("failureCode"), attempts=answer.attempts)

    async def _follow(self, ctx: Context, batch: Batch, item: Item, encryption: dict[str, Any],
                      outcome: str, *, status: str = "IN_PROGRESS", failure: str | None = None,
                      attempts: int = 1, wanted: dict[str, Any] | None = None) -> Outcome:
        try:
            return await self._wait(ctx, batch, item, encryption, outcome, status=status,
                                    failure=failure, attempts=attempts, wanted=wanted,
                                    until=time.monotonic() + self.wait_timeout_s)
        finally:
            ctx.phases.clear(batch.instance_id)

    async def _wait(self, ctx: Context, batch: Batch, item: Item, encryption: dict[str, Any],
                    outcome: str, *, status: str, failure: str | None, attempts: int,
                    wanted: dict[str, Any] | None, until: float) -> Outcome:
        """Poll until SUCCEEDED or FAILED, or ``until``; the phase says what it waits on."""
        waited_until, polls = until, 0
        while self.wait and status == "IN_PROGRESS" and time.monotonic() < waited_until:
            ctx.phases.set(batch.instance_id, status, what="waiting on {n} jobs")
            pause = POLL_INTERVALS_S[min(polls, len(POLL_INTERVALS_S) - 1)]
            with anyio.move_on_after(min(pause, max(0.0, waited_until - time.monotonic()))):
                await ctx.stopping.wait()
            if ctx.stopping.is_set():
                # The start is noted: a resumed run waits on for this job.
                raise Abandoned(f"stopped waiting for {batch.instance_id}")
            polls += 1
            current = await self._status(ctx, batch)
            if current is None:  # deleted under us
                break
            status, failure = current["status"], current.get("failureCode")
            ctx.phases.set(batch.instance_id, status, what="waiting on {n} jobs")
        if status == "FAILED":
            code = str(failure or "UNKNOWN_FAILURE")
            return Failure(item, failed(code, f"the onboarding job ended FAILED ({code})"))
        return Success(item, self._row(batch, encryption, status, outcome, wanted), attempts)


def _config(encryption: dict[str, Any]) -> str:
    if not encryption.get("enabled"):
        return "no encryption"
    return f"KMS key {encryption.get('keyArn')}"


JOB = CampaignOnboarding
