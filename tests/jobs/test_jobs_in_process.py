"""Each job's ``process`` in this process, with a real aiobotocore client (``aws.Caller``)
against the sandbox: what a batch becomes, without a subprocess or a run directory."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import polars as pl
import pytest
from connect_bulk.jobs._listing import PerInstance
from connect_bulk.jobs.associate_flows import AssociateFlows
from connect_bulk.jobs.campaign_onboarding import CampaignOnboarding
from connect_bulk.jobs.flow_associations import FlowAssociations
from connect_bulk.pipeline.aws import AwsSettings, Caller
from connect_bulk.pipeline.engine import Engine, Limits
from connect_bulk.pipeline.errors import Abandoned, ClientFault
from connect_bulk.pipeline.events import EventLog
from connect_bulk.pipeline.job import (
    ANSWER_SLOT,
    AnswerSlot,
    Batch,
    Context,
    Failure,
    Item,
    Outcome,
    Success,
    answer_slot_to_take,
    one_by_one,
)
from connect_bulk.pipeline.journal import Journal
from connect_bulk.pipeline.notes import Notes
from connect_bulk.pipeline.rundir import RunDir
from connect_bulk.pipeline.wal import GroupCommit

from tests.cli.world import build_world
from tests.conftest import Sandbox

ACCOUNT, REGION = "123456789012", "us-east-1"


def _batch(instance: str, *items: tuple[str, dict[str, Any]]) -> Batch:
    return Batch(f"{instance}#00000", instance, REGION, ACCOUNT, tuple(
        Item(key, instance, REGION, ACCOUNT, row, data)
        for row, (key, data) in enumerate(items, 1)))


def _in_process(sandbox: Sandbox, body: Callable[[Context], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        settings = AwsSettings(endpoint_url=sandbox.url, region=REGION, rate=100, burst=100)
        async with Caller(settings) as caller:
            return await body(Context(aws=caller, notes=Notes(None)))

    return anyio.run(main)


def test_flow_associations_answers_ids_and_e164_and_fails_what_is_not_claimed(
    sandbox: Sandbox,
) -> None:
    world = build_world(sandbox, instances=1, numbers_per_instance=3, associate_every=2)
    instance = world.instances[0]["Id"]
    unassociated, associated, by_e164 = world.numbers
    batch = _batch(instance, (unassociated.id, {}), (associated.id, {}),
                   (by_e164.e164, {"phone_number": by_e164.e164}), ("+15550009999", {}))
    job = FlowAssociations()
    outcomes: list[Outcome] = _in_process(sandbox, lambda ctx: job.process(batch, ctx))
    by_key = {o.item.item_key: o for o in one_by_one(outcomes)}
    assert isinstance(by_key[associated.id], Success)
    assert by_key[associated.id].row["flow_id"] == associated.flow_arn
    assert by_key[associated.id].row["phone_number_arn"] == associated.arn
    assert by_key[unassociated.id].row["associated"] is False  # type: ignore[union-attr]
    assert by_key[by_e164.e164].row["phone_number_id"] == by_e164.id  # type: ignore[union-attr]
    missing = by_key["+15550009999"]
    assert isinstance(missing, Failure) and missing.error.code == "PhoneNumberNotFound"
    # One listing for the E.164 numbers, one BatchGetFlowAssociation (with ARNs: the sandbox
    # refuses bare IDs, as the AWS model does).
    calls = sandbox.stats()["calls"]
    assert (calls["ListPhoneNumbersV2"], calls["BatchGetFlowAssociation"]) == (1, 1)


class Renaming:
    """The sandbox's answers, but each flow association names its number as ``rename`` writes
    it (a service may answer otherwise than it was asked)."""

    def __init__(self, calls: Any, rename: Callable[[str], str]) -> None:
        self.calls, self.rename = calls, rename

    async def call(self, service: str, operation: str, **kwargs: Any) -> Any:
        answer = await self.calls.call(service, operation, **kwargs)
        for summary in answer.data.get("FlowAssociationSummaryList", []):
            summary["ResourceId"] = self.rename(summary["ResourceId"])
        return answer


@pytest.mark.parametrize("rename", [
    lambda arn: arn,
    lambda arn: arn.upper(),
    lambda arn: arn.rsplit("/", 1)[1],
], ids=["as asked", "upper case", "an ID"])
def test_flow_associations_finds_each_number_however_the_answer_names_it(
    sandbox: Sandbox, rename: Callable[[str], str],
) -> None:
    world = build_world(sandbox, instances=1, numbers_per_instance=4, associate_every=2)
    instance = world.instances[0]["Id"]
    batch = _batch(instance, *((n.id, {}) for n in world.numbers))
    job = FlowAssociations()
    outcomes: list[Outcome] = _in_process(
        sandbox, lambda ctx: job.process(batch, Context(Renaming(ctx.aws, rename), ctx.notes)))
    rows = {o.item.item_key: o.row for o in one_by_one(outcomes)
            if isinstance(o, Success)}
    assert {key: (row["flow_id"], row["associated"], row["phone_number_arn"])
            for key, row in rows.items()} == {
        n.id: (n.flow_arn, True, rename(n.arn)) if n.flow_arn else (None, False, n.arn)
        for n in world.numbers}


@pytest.mark.parametrize("job", [FlowAssociations(), AssociateFlows(dry_run=True)],
                         ids=["flow-associations", "associate-flows"])
def test_an_instances_look_ups_made_ahead_are_not_made_again_by_its_batch(
    sandbox: Sandbox, job: Any,
) -> None:
    world = build_world(sandbox, instances=1, numbers_per_instance=2, associate_every=2)
    instance = world.instances[0]["Id"]
    by_id, by_e164 = world.numbers
    flow = {"flow": "name:Flow 0"} if isinstance(job, AssociateFlows) else {}
    batch = _batch(instance, (by_id.id, flow), (by_e164.e164, {"phone_number": by_e164.e164,
                                                               **flow}))
    look_ups = ("DescribeInstance", "ListContactFlows", "ListPhoneNumbersV2")

    async def ahead_then_process(ctx: Context) -> list[Outcome]:
        await job.look_ahead(batch, ctx)
        made = sandbox.stats()["calls"]
        assert {op: made.get(op) for op in look_ups} == dict.fromkeys(look_ups, 1)
        assert "BatchGetFlowAssociation" not in made
        return list(await job.process(batch, ctx))

    outcomes = _in_process(sandbox, ahead_then_process)
    assert all(isinstance(o, Success) for o in one_by_one(outcomes)), outcomes
    calls = sandbox.stats()["calls"]
    assert {op: calls.get(op) for op in look_ups} == dict.fromkeys(look_ups, 1)
    assert calls["BatchGetFlowAssociation"] >= 1


def test_an_instance_that_cannot_be_looked_up_ahead_fails_in_its_batch_as_before(
    sandbox: Sandbox,
) -> None:
    batch = _batch("00000000-0000-4000-8000-000000000000",
                   ("00000000-0000-4000-8000-000000000001", {"flow": "Main menu"}))
    job = AssociateFlows(dry_run=True)

    async def ahead_then_process(ctx: Context) -> list[Outcome]:
        await job.look_ahead(batch, ctx)  # refused: kept, not raised
        return list(await job.process(batch, ctx))

    with pytest.raises(ClientFault) as refused:
        _in_process(sandbox, ahead_then_process)
    assert refused.value.code == "ResourceNotFoundException"
    assert sandbox.stats()["calls"]["ListContactFlows"] == 1  # asked once, not again


def test_flow_associations_lets_a_refused_batch_be_split_by_the_engine(
    sandbox: Sandbox,
) -> None:
    world = build_world(sandbox, instances=2, numbers_per_instance=1)
    first, second = world.instances
    foreign = world.of(second)[0]
    batch = _batch(first["Id"], (world.of(first)[0].id, {}), (foreign.id, {}))
    with pytest.raises(ClientFault) as refused:
        _in_process(sandbox, lambda ctx: FlowAssociations().process(batch, ctx))
    assert refused.value.code in FlowAssociations.split_codes


def test_campaign_onboarding_starts_waits_and_then_finds_it_onboarded(
    sandbox: Sandbox,
) -> None:
    instance = sandbox.client("connect").create_instance(
        IdentityManagementType="CONNECT_MANAGED", InstanceAlias="p", InboundCallsEnabled=True,
        OutboundCallsEnabled=True)["Id"]
    key = sandbox.client("kms").create_key()["KeyMetadata"]["Arn"]
    batch = _batch(instance, (instance, {"kms_key_arn": key}))
    job = CampaignOnboarding(kms_key_arn=key, wait_timeout="30s")
    (first,) = _in_process(sandbox, lambda ctx: job.process(batch, ctx))
    assert isinstance(first, Success)
    assert (first.row["status"], first.row["outcome"], first.row["warning"]) == (
        "SUCCEEDED", "started", None)
    (again,) = _in_process(sandbox, lambda ctx: job.process(batch, ctx))
    assert again.row["outcome"] == "already_onboarded"  # type: ignore[union-attr]
    assert sandbox.stats()["calls"]["StartInstanceOnboardingJob"] == 1


def test_campaign_onboarding_stops_waiting_when_the_run_stops(sandbox: Sandbox) -> None:
    instance = sandbox.client("connect").create_instance(
        IdentityManagementType="CONNECT_MANAGED", InstanceAlias="w", InboundCallsEnabled=True,
        OutboundCallsEnabled=True)["Id"]
    sandbox.control("faults", {"onboarding_seconds": 60})
    batch = _batch(instance, (instance, {"kms_key_arn": None}))
    job = CampaignOnboarding(no_encryption=True, wait_timeout="5m")

    async def stop_soon(ctx: Context) -> str:
        async with anyio.create_task_group() as group:
            group.start_soon(_set_after, ctx.stopping, 0.5)
            try:
                await job.process(batch, ctx)
            except Abandoned:
                return "abandoned"
        return "waited"

    assert _in_process(sandbox, stop_soon) == "abandoned"  # not after 60 s of polling
    assert sandbox.stats()["calls"]["StartInstanceOnboardingJob"] == 1


async def _set_after(event: anyio.Event, seconds: float) -> None:
    await anyio.sleep(seconds)
    event.set()


def test_associate_flows_tells_what_it_will_change_per_instance_and_flow() -> None:
    instance = "11111111-1111-4111-8111-111111111111"
    numbers = [f"00000000-0000-4000-8000-{i:012d}" for i in range(5)]
    frame = pl.DataFrame({
        "input_row": list(range(1, 6)),
        "instance_id": [instance] * 5,
        "phone_number": numbers,
        "flow": ["Sales", "Sales", "Sales", None, "Support"],
    })
    job = AssociateFlows(allow_disassociate=True)
    lines = job.describe(job.normalize(frame.lazy()).items.collect())
    assert lines == [f"  3 numbers of instance {instance} -> flow 'Sales'",
                     f"  1 numbers of instance {instance} -> flow 'Support'",
                     f"  1 numbers of instance {instance} -> no flow (disassociate)"]
    assert AssociateFlows().changes_state and not AssociateFlows(dry_run=True).changes_state


def test_no_call_starts_once_the_run_stops_even_with_a_token_and_a_slot_free(
    sandbox: Sandbox,
) -> None:
    """A call whose token and slot are free takes them without a wait to cancel: the look
    after them still keeps it from going out once the run stops."""
    instance = sandbox.client("connect").create_instance(
        IdentityManagementType="CONNECT_MANAGED", InstanceAlias="s", InboundCallsEnabled=True,
        OutboundCallsEnabled=True)["Id"]
    before = sandbox.stats()["calls"].get("DescribeInstance", 0)

    async def stopped(ctx: Context) -> str:
        caller = ctx.aws
        await caller.call("connect", "DescribeInstance", region=REGION, account=ACCOUNT,
                          InstanceId=instance)  # 100 tokens and 16 slots: most are free
        caller.stop_calls()
        try:
            await caller.call("connect", "DescribeInstance", region=REGION, account=ACCOUNT,
                              InstanceId=instance)
        except Abandoned:
            return "abandoned"
        return "sent"

    assert _in_process(sandbox, stopped) == "abandoned"
    assert sandbox.stats()["calls"]["DescribeInstance"] == before + 1


class HeldCommits(GroupCommit):
    """The journal's fsyncs, held until the test lets them go: every answer stays not durable."""

    def __init__(self) -> None:
        super().__init__(0.0)
        self.go: anyio.Event | None = None

    async def gather(self, receive: Any, first: Any) -> list[Any]:
        assert self.go is not None
        await self.go.wait()
        return await super().gather(receive, first)


def _engine(sandbox: Sandbox, tmp_path: Path, batches: list[Batch], *, concurrency: int,
            commits: GroupCommit | None = None,
            meanwhile: Callable[[], Awaitable[None]] | None = None) -> Journal:
    """The engine running flow-associations over ``batches`` in this process (a real
    ``Caller`` against the sandbox), ``meanwhile`` beside it; returns its journal."""
    job = FlowAssociations()
    rundir = RunDir(tmp_path / "run")
    rundir.create()
    journal = Journal(rundir, job.result_schema, commits=commits)
    events = EventLog(run_id="t", log_format="json", path=tmp_path / "events.jsonl")

    async def main() -> None:
        settings = AwsSettings(endpoint_url=sandbox.url, region=REGION, rate=1000, burst=1000,
                               concurrency=concurrency)
        with anyio.fail_after(60):  # a deadlock fails, it does not hang
            async with Caller(settings) as caller, anyio.create_task_group() as group:
                engine = Engine(job=job, context=Context(aws=caller, notes=Notes(None)),
                                journal=journal, events=events, limits=Limits(),
                                concurrency=concurrency)
                group.start_soon(engine.run, batches)
                if meanwhile is not None:
                    await meanwhile()

    try:
        anyio.run(main)
    finally:
        events.close()
    return journal


def _numbered(batches: list[Batch]) -> list[Batch]:
    return [Batch(f"{b.instance_id}#{n:05d}", b.instance_id, b.region, b.account_id, b.items)
            for n, b in enumerate(batches)]


def test_batches_beyond_the_call_slots_never_leave_more_answers_unwritten_than_the_concurrency(
    sandbox: Sandbox, tmp_path: Path,
) -> None:
    """flow-associations holds four batches a call slot (their look-ups wait without one), but
    a batch's first call takes one of --concurrency answer slots, given back only once its
    answers are durable: with the log's fsyncs held, two calls go out and no third, so a crash
    there would make again two calls, not eight."""
    world = build_world(sandbox, instances=2, numbers_per_instance=400)
    batches = _numbered([
        _batch(instance["Id"], *((n.id, {}) for n in world.of(instance)[i:i + 100]))
        for instance in world.instances for i in range(0, 400, 100)])
    assert FlowAssociations.batches_per_slot * 2 >= len(batches)  # all eight in flight at once
    commits = HeldCommits()
    op = "BatchGetFlowAssociation"

    async def hold_then_let_go() -> None:
        commits.go = anyio.Event()
        await anyio.to_thread.run_sync(sandbox.wait_for_calls, op, 2)
        await anyio.sleep(1.0)  # time enough for a third call, were one let out
        assert (await anyio.to_thread.run_sync(sandbox.stats))["calls"][op] == 2
        commits.go.set()

    journal = _engine(sandbox, tmp_path, batches, concurrency=2, commits=commits,
                      meanwhile=hold_then_let_go)
    assert sandbox.stats()["calls"][op] == len(batches)
    assert journal.counts.succeeded == 800


def test_batches_of_e164_numbers_share_their_instances_look_ups_at_concurrency_1(
    sandbox: Sandbox, tmp_path: Path,
) -> None:
    """Numbers by E.164: the first batch lists the instance's numbers, the others wait for it,
    then all of them for its alias and flows, with one answer slot between them. (Had the
    listing taken the lister's answer slot, a batch that took the alias's lock before the lister
    would wait for that slot while the lister waits for the lock: whether it does depends on
    the order the tasks run in, so the test below checks the look-up itself.)"""
    world = build_world(sandbox, instances=1, numbers_per_instance=300)
    (instance,) = world.instances
    batches = _numbered([
        _batch(instance["Id"], *((n.e164, {"phone_number": n.e164})
                                 for n in world.of(instance)[i:i + 100]))
        for i in range(0, 300, 100)])
    journal = _engine(sandbox, tmp_path, batches, concurrency=1)
    assert journal.counts.succeeded == 300
    calls = sandbox.stats()["calls"]
    assert (calls["ListPhoneNumbersV2"], calls["DescribeInstance"]) == (1, 1)


def test_an_instances_look_up_takes_no_answer_slot_and_leaves_the_batchs_to_its_call() -> None:
    seen: list[AnswerSlot | None] = []

    async def look_up(ctx: Context, batch: Batch) -> str:
        seen.append(answer_slot_to_take())
        return "alias"

    async def main() -> None:
        slot = AnswerSlot(anyio.Semaphore(1))
        ANSWER_SLOT.set(slot)
        ctx: Any = None  # the look-up above makes no call
        assert await PerInstance(look_up).of(ctx, _batch("i", ("k", {}))) == "alias"
        assert answer_slot_to_take() is slot  # the batch's own call takes it

    anyio.run(main)
    assert seen == [None]
