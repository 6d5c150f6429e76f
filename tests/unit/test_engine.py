"""The engine with a fake job: splitting, failures, fatal stops, concurrency, failure rate.
No AWS and no clock: the fake job answers at once and records what it was asked."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, ClassVar

import anyio
import polars as pl
import pytest
from connect_bulk.pipeline.engine import MAX_WAITING_BATCHES, Engine, Limits
from connect_bulk.pipeline.errors import ClientFault, FatalError, ServerError
from connect_bulk.pipeline.events import EventLog
from connect_bulk.pipeline.job import (
    Answered,
    Batch,
    Context,
    Failure,
    Item,
    Job,
    Normalized,
    Outcome,
    Success,
)
from connect_bulk.pipeline.journal import Entry, Journal
from connect_bulk.pipeline.notes import Notes
from connect_bulk.pipeline.rundir import RunDir
from connect_bulk.pipeline.wal import GroupCommit

from tests.helpers import split_calls


class SpyJob(Job):
    name = "spy"
    summary = "records its calls"
    columns = ()
    operation = "Spy"
    batch_size = 100
    split_codes = frozenset({"ResourceNotFoundException"})
    result_schema: ClassVar[dict[str, Any]] = {"instance_id": pl.String}

    def __init__(self, bad: frozenset[str] = frozenset(), error: type = ClientFault,
                 code: str = "ResourceNotFoundException") -> None:
        super().__init__()
        self.bad = bad
        self.error = error
        self.code = code
        self.calls: list[int] = []
        self.running = 0
        self.max_running = 0

    def normalize(self, frame: pl.DataFrame) -> Normalized:  # pragma: no cover - unused
        raise NotImplementedError

    async def process(self, batch: Batch, ctx: Any) -> list[Outcome]:
        self.calls.append(len(batch.items))
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        await anyio.wait_all_tasks_blocked()
        self.running -= 1
        if any(item.item_key in self.bad for item in batch.items):
            raise self.error(self.code, "refused", http_status=404)
        return [Success(item, {"instance_id": item.instance_id}, 1) for item in batch.items]


class FakeCaller:
    async def call(self, service: str, operation: str, *, region: str, account: str,
                   **params: Any) -> Any:  # pragma: no cover - the spy job calls nothing
        raise AssertionError("not called")


def _batches(sizes: list[int]) -> list[Batch]:
    batches, serial = [], 0
    for b, size in enumerate(sizes):
        items = []
        for _ in range(size):
            serial += 1
            items.append(Item(f"k{serial}", "i", "us-east-1", "1", serial))
        batches.append(Batch(f"i#{b}", "i", "us-east-1", "1", tuple(items)))
    return batches


def _run(tmp_path: Path, job: SpyJob, batches: list[Batch], **limits: Any) -> tuple[Any, Journal]:
    rundir = RunDir(tmp_path / "run")
    rundir.create()
    journal = Journal(rundir, job.result_schema, flush_rows=10_000)
    events = EventLog(run_id="t", log_format="json", path=tmp_path / "events.jsonl")
    concurrency = limits.pop("concurrency", 4)
    context = Context(aws=FakeCaller(), notes=Notes(None))
    engine = Engine(job=job, context=context, journal=journal, events=events,
                    limits=Limits(**limits), concurrency=concurrency)
    try:
        stop = anyio.run(engine.run, batches)
    finally:
        events.close()
    return stop, journal


def test_a_batch_refused_for_one_item_is_halved_until_it_stands_alone(tmp_path: Path) -> None:
    job = SpyJob(bad=frozenset({"k37"}))
    stop, journal = _run(tmp_path, job, _batches([100]))
    assert stop.reason is None
    assert job.calls[0] == 100
    assert len(job.calls) == split_calls(100, {36})
    assert job.calls.count(1) == 3
    assert (journal.counts.succeeded, journal.counts.failed) == (99, 1)
    journal.finalize()
    failures = pl.read_parquet(journal.rundir.failures)
    assert failures["item_key"].to_list() == ["k37"]
    assert failures["batch_id"].item().startswith("i#0.")


def test_an_error_outside_split_codes_fails_the_whole_batch(tmp_path: Path) -> None:
    job = SpyJob(bad=frozenset({"k3"}), code="AccessDeniedException")
    _, journal = _run(tmp_path, job, _batches([10, 10]))
    assert job.calls == [10, 10]
    assert (journal.counts.succeeded, journal.counts.failed) == (10, 10)


def test_transient_errors_that_reach_the_engine_are_retryable_failures(tmp_path: Path) -> None:
    job = SpyJob(bad=frozenset({"k1"}), error=ServerError, code="InternalServiceException")
    _, journal = _run(tmp_path, job, _batches([5]))
    journal.finalize()
    failures = pl.read_parquet(journal.rundir.failures)
    assert failures.height == 5 and all(failures["retryable"])


def test_a_fatal_error_stops_the_run_and_records_nothing_for_it(tmp_path: Path) -> None:
    job = SpyJob(bad=frozenset({"k1"}), error=FatalError, code="ExpiredToken")
    stop, journal = _run(tmp_path, job, _batches([5, 5, 5]), concurrency=1)
    assert stop.reason == "aborted"
    assert journal.counts.failed == 0  # its items stay pending for resume
    assert len(job.calls) == 1


def test_no_more_batches_in_flight_than_the_concurrency(tmp_path: Path) -> None:
    job = SpyJob()
    _run(tmp_path, job, _batches([3] * 40), concurrency=3)
    assert len(job.calls) == 40
    assert 1 < job.max_running <= 3


class WaitingJob(SpyJob):
    batches_per_slot = 4  # its batches wait for look-ups holding no call slot


@pytest.mark.parametrize(("concurrency", "in_flight"),
                         [(4, 16), (16, 64), (64, 64 + MAX_WAITING_BATCHES)])
def test_batches_beyond_the_call_slots_are_a_few_dozen_at_most(
        tmp_path: Path, concurrency: int, in_flight: int) -> None:
    job = WaitingJob()
    _run(tmp_path, job, _batches([1] * 300), concurrency=concurrency)
    assert len(job.calls) == 300
    assert job.max_running == in_flight


@pytest.mark.parametrize(("limit", "aborted"), [(0.5, True), (0.99, False)])
def test_failure_rate_counts_only_after_200_items(tmp_path: Path, limit: float,
                                                 aborted: bool) -> None:
    # Batches 1, 2, 4, 5, 7, 8 fail as a whole: 50% after 200 items, 67% after 300.
    bad = frozenset(f"k{i}" for i in range(1, 1001) if (i - 1) // 100 % 3 != 0)
    job = SpyJob(bad=bad, error=ServerError, code="InternalServiceException")
    stop, journal = _run(tmp_path, job, _batches([100] * 10), concurrency=1,
                         max_failure_rate=limit)
    assert (stop.reason == "aborted") is aborted
    if aborted:
        assert journal.counts.failed == 200  # 50% at 200 is not over; 67% at 300 is
        assert len(job.calls) == 3
    else:
        assert len(job.calls) == 10


def test_record_keeps_outcome_columns(tmp_path: Path) -> None:
    rundir = RunDir(tmp_path / "run")
    rundir.create()
    journal = Journal(rundir, {"instance_id": pl.String})
    item = Item("k", "i", "r", "a", 3)
    journal.record("b", [Failure(item, ClientFault("X", "y", http_status=400, attempts=2))])
    journal.flush({})
    journal.finalize()
    row = pl.read_parquet(rundir.failures).row(0, named=True)
    assert (row["item_key"], row["input_row"], row["error_code"], row["http_status"],
            row["attempts"], row["batch_id"], row["retryable"]) == ("k", 3, "X", 400, 2, "b",
                                                                     False)


def _journal(tmp_path: Path) -> Journal:
    rundir = RunDir(tmp_path / "run")
    rundir.create()
    (rundir.parts).mkdir(parents=True, exist_ok=True)
    return Journal(rundir, {"instance_id": pl.String, "flow": pl.String, "n": pl.Int64})


def test_answers_as_columns_rows_and_failures_land_item_by_item(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    items = [Item(f"k{i}", "i", "r", "a", i) for i in range(5)]
    journal.record("b1", [
        Answered(items[:3], {"flow": ["f0", "f1", "f2"], "n": [0, 1, 2]}, 2),
        Success(items[3], {"flow": "f3"}, 1),
        Failure(items[4], ClientFault("X", "y")),
    ])
    journal.sync_wal()
    assert (journal.counts.succeeded, journal.counts.failed) == (4, 1)
    journal.flush({})
    results = journal.finalize()
    assert results.select("item_key", "flow", "n", "attempts", "input_row").rows() == [
        ("k0", "f0", 0, 2, 0), ("k1", "f1", 1, 2, 1), ("k2", "f2", 2, 2, 2),
        ("k3", "f3", None, 1, 3)]
    assert pl.read_parquet(journal.rundir.failures)["item_key"].to_list() == ["k4"]


def test_an_answer_whose_columns_miss_an_item_is_refused(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    items = [Item(f"k{i}", "i", "r", "a", i) for i in range(3)]
    with pytest.raises(ValueError, match="one value an item"):
        journal.record("b1", [Answered(items, {"flow": ["f0", "f1"]}, 1)])


def test_the_log_of_a_killed_run_is_replayed_in_either_layout(tmp_path: Path) -> None:
    """An entry as columns, and one as rows (as an earlier version logged them): a run killed
    under either is resumed with both."""
    journal = _journal(tmp_path)
    at = "2026-11-23T10:00:00+00:00"
    by_columns = {"batch_id": "b1", "at": at, "failures": {}, "results": {
        "instance_id": ["i"], "flow": ["f0"], "n": [0], "item_key": ["k0"], "input_row": [0],
        "batch_id": ["b1"], "attempts": [1]}}
    by_rows = {"batch_id": "b2", "at": at, "results": [["i", "f1", 1, "k1", 1, "b2", 1]],
               "failures": [["k2", "i", 2, "X", "y", 400, False, 1, "b2"]]}
    journal.wal.write_text("".join(json.dumps(e) + "\n" for e in (by_columns, by_rows)))
    pl.DataFrame({"item_key": ["k0"]}).write_parquet(journal.rundir.items)
    journal.load()
    assert (journal.counts.succeeded, journal.counts.failed) == (2, 1)
    results = journal.finalize()
    assert results.select("item_key", "flow", "batch_id").rows() == [("k0", "f0", "b1"),
                                                                     ("k1", "f1", "b2")]
    assert results["completed_at"].dt.hour().to_list() == [10, 10]
    assert pl.read_parquet(journal.rundir.failures)["error_code"].to_list() == ["X"]


def test_each_item_keeps_its_latest_outcome_across_parts(tmp_path: Path) -> None:
    """k0 fails, then succeeds; k1 succeeds, then fails; k2 fails twice: a part of each kind
    in each flush, so the rows are sorted by part before the latest is taken."""
    journal = _journal(tmp_path)
    k = [Item(f"k{i}", "i", "r", "a", i) for i in range(3)]
    error = ClientFault("X", "y")
    for outcomes in ([Failure(k[0], error), Success(k[1], {}, 1), Failure(k[2], error)],
                     [Success(k[0], {}, 1), Failure(k[1], error), Failure(k[2], error)]):
        journal.record("b", outcomes)
        journal.flush({})
    latest = journal.latest().sort("item_key")
    assert latest.select("item_key", "ok").rows() == [("k0", True), ("k1", False),
                                                      ("k2", False)]
    assert journal.finalize()["item_key"].to_list() == ["k0"]
    assert pl.read_parquet(journal.rundir.failures)["item_key"].to_list() == ["k1", "k2"]


def test_answers_logged_while_a_part_is_written_stay_in_the_log(tmp_path: Path) -> None:
    """A compaction takes the log it set aside, never the one answers go on to meanwhile."""
    journal = _journal(tmp_path)
    pl.DataFrame({"item_key": ["k0"]}).write_parquet(journal.rundir.items)
    first, second = (Item(f"k{i}", "i", "r", "a", i) for i in range(2))
    journal.record("b1", [Success(first, {"flow": "f0"}, 1)])
    journal.sync_wal()
    compaction = journal._set_aside()  # what the writer does, then hands to a thread
    journal.record("b2", [Success(second, {"flow": "f1"}, 1)])
    journal.sync_wal()  # while the part is being written
    journal._compact(compaction, {})
    assert journal.wal.is_file() and not list(journal.rundir.parts.glob("wal-*.jsonl"))
    again = _journal_again(journal)  # a crash here: the part holds k0, the log k1
    assert sorted(again.load()["item_key"].to_list()) == ["k0", "k1"]


def test_the_log_is_opened_once_for_many_fsyncs_and_closed_when_set_aside(
        tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    pl.DataFrame({"item_key": ["k0"]}).write_parquet(journal.rundir.items)

    def open_logs() -> list[str]:
        fds = Path("/proc/self/fd")
        parts = journal.rundir.parts.resolve()
        return [str(target) for fd in fds.iterdir()
                if (target := Path(fds / fd.name).resolve()).parent == parts]

    for i in range(3):
        journal.record(f"b{i}", [Success(Item(f"k{i}", "i", "r", "a", i), {"flow": "f"}, 1)])
        journal.sync_wal()
    assert open_logs() == [str(journal.wal.resolve())]
    assert len(journal.wal.read_bytes().splitlines()) == 3
    assert journal.wal.stat().st_mode & 0o777 == 0o600  # the owner's only, as every file
    journal._set_aside()
    assert open_logs() == []


def test_a_log_set_aside_by_a_compaction_cut_short_is_replayed(tmp_path: Path) -> None:
    """A kill between setting the log aside and writing its part: the next execution replays
    it and the current log, and sets its own aside under a name of its own."""
    journal = _journal(tmp_path)
    pl.DataFrame({"item_key": ["k0"]}).write_parquet(journal.rundir.items)
    first, second = (Item(f"k{i}", "i", "r", "a", i) for i in range(2))
    journal.record("b1", [Success(first, {"flow": "f0"}, 1)])
    journal.sync_wal()
    journal._set_aside()  # killed before the part
    journal.record("b2", [Success(second, {"flow": "f1"}, 1)])
    journal.sync_wal()
    assert [log.name for log in journal._logs()] == ["wal-000001.jsonl", "wal.jsonl"]
    again = _journal_again(journal)
    assert sorted(again.load()["item_key"].to_list()) == ["k0", "k1"]
    assert again._logs() == [] and [n for _, n in again._parts()] == [2]


def _journal_again(journal: Journal) -> Journal:
    return Journal(journal.rundir, {"instance_id": pl.String, "flow": pl.String,
                                    "n": pl.Int64})


class LookAheadJob(SpyJob):
    """Notes when each instance's look-ups start, and how many batches are in flight then."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str, int]] = []

    async def look_ahead(self, batch: Batch, ctx: Any) -> None:
        self.seen.append(("look-ahead", batch.instance_id, self.running))

    async def process(self, batch: Batch, ctx: Any) -> list[Outcome]:
        self.seen.append(("process", batch.instance_id, self.running))
        return await super().process(batch, ctx)


def test_an_instances_look_ups_start_while_the_batches_before_it_are_in_flight(
        tmp_path: Path) -> None:
    batches = [Batch(f"{instance}#{b}", instance, "us-east-1", "1",
                     (Item(f"{instance}-{b}", instance, "us-east-1", "1", b),))
               for instance in ("a", "b", "c") for b in range(4)]
    job = LookAheadJob()
    _run(tmp_path, job, batches, concurrency=2)
    ahead = [(instance, running) for what, instance, running in job.seen
             if what == "look-ahead"]
    # Once for each instance whose first batch waits for a slot ("a"'s do not wait), while
    # earlier batches are in flight, and before the instance's first batch.
    assert [instance for instance, _ in ahead] == ["b", "c"]
    assert all(running > 0 for _, running in ahead)
    for instance in "bc":
        order = [(what, i) for what, i, _ in job.seen if i == instance]
        assert order[0] == ("look-ahead", instance) and len(order) == 5


class CountingJournal(Journal):
    syncs = 0

    def sync_wal(self) -> None:
        if self._wal_lines:
            self.syncs += 1
        super().sync_wal()


def _commit(journal: Journal, batches: int, apart_s: float = 0.0) -> float:
    """Batches that end ``apart_s`` after one another, through the writer task; the seconds
    until all are durable."""
    items = [Item(f"k{i}", "i", "r", "a", i) for i in range(batches)]

    async def main() -> float:
        send, receive = anyio.create_memory_object_stream[Entry](max_buffer_size=64)
        started = anyio.current_time()
        async with anyio.create_task_group() as group:
            group.start_soon(journal.run, receive, dict)
            async with send:
                entries = [Entry(f"b{i}", [Success(item, {"flow": "f"}, 1)])
                           for i, item in enumerate(items)]
                for entry in entries:
                    await send.send(entry)
                    await anyio.sleep(apart_s)
                with anyio.fail_after(20):
                    for entry in entries:
                        await entry.durable.wait()
                took = anyio.current_time() - started
        return took

    return anyio.run(main)


def _counting(tmp_path: Path, interval_s: float, *, busy: bool) -> CountingJournal:
    """A journal whose run is busy (``busy``) or has CPU to spare, whatever this process
    does."""
    journal = _journal(tmp_path)
    return CountingJournal(journal.rundir, {"instance_id": pl.String, "flow": pl.String,
                                            "n": pl.Int64},
                           commits=GroupCommit(interval_s, sample_s=0.0,
                                               busy_share=-1.0 if busy else math.inf))


def test_batches_that_end_within_the_commit_interval_of_a_busy_run_share_one_fsync(
        tmp_path: Path) -> None:
    counting = _counting(tmp_path, 0.2, busy=True)
    # 2 ms apart, longer than an fsync takes: without the interval, each would have its own.
    _commit(counting, 40, apart_s=0.002)
    assert 1 <= counting.syncs <= 3  # the first at once, the rest together
    assert counting.counts.succeeded == 40


def test_a_run_with_cpu_to_spare_syncs_each_batch_as_it_comes(tmp_path: Path) -> None:
    """Its batches wait for their calls, not for the CPU: a wait for the next fsync would
    hold their slots for nothing."""
    counting = _counting(tmp_path, 0.2, busy=False)
    took = _commit(counting, 40, apart_s=0.002)
    assert counting.syncs >= 30
    assert took < 0.2 * 40 / 2  # far from a wait of the interval each


def test_a_run_is_busy_while_it_uses_more_than_its_share_of_a_core() -> None:
    commits = GroupCommit(0.02, busy_share=0.5, sample_s=0.02)
    until = time.perf_counter() + 0.05
    while time.perf_counter() < until:
        pass
    assert commits.busy()
    time.sleep(0.05)
    assert not commits.busy()


def test_a_lone_batch_does_not_wait_for_the_commit_interval(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    patient = Journal(journal.rundir, {"instance_id": pl.String, "flow": pl.String,
                                       "n": pl.Int64}, commits=GroupCommit(60))
    assert _commit(patient, 1) < 20


def test_no_look_ahead_before_a_batch_has_come_back(tmp_path: Path) -> None:
    """The first batches make their own look-ups: one made ahead then would only take their
    rate (a resumed run's first call would wait for it)."""
    batches = [Batch(f"{instance}#0", instance, "us-east-1", "1",
                     (Item(instance, instance, "us-east-1", "1", n),))
               for n, instance in enumerate("abcd")]
    job = LookAheadJob()
    _run(tmp_path, job, batches, concurrency=2)
    # "c" waits for a slot before any batch has come back; "d" waits after "a" came back.
    assert [i for what, i, _ in job.seen if what == "look-ahead"] == ["d"]
