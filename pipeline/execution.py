"""One execution of a run, under its lock: the pending items, the engine under the signal
listener, the closing summary, and what happens when the disk gives out. ``runs`` decides which
run and which items; this module runs them."""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import anyio
import polars as pl

from . import signals
from .aws import Caller, OperationStats
from .durations import parse_deadline
from .engine import Engine, Limits, Stop, StopReason
from .errors import Abandoned, CallError, DamagedRun, StorageError, TransientError, UsageError
from .events import EventLog, library_warnings
from .job import Context, Job, Phases
from .journal import Journal
from .notes import Notes
from .parts import KEY
from .peers import Peers
from .plan import iter_batches
from .record import EXIT_CODES, Mode, Report, RunOptions, record_execution
from .render import closing_line, print_summary
from .rundir import RunDir, utc_now


def _pending(rundir: RunDir, journal: Journal, job: Job, mode: Mode) -> pl.DataFrame:
    if not rundir.items.is_file():
        raise DamagedRun(rundir.items, "missing (the run's planned items)")
    try:
        items = pl.read_parquet(rundir.items)
    except pl.exceptions.PolarsError as exc:
        raise DamagedRun(rundir.items, f"not a readable Parquet file ({exc})") from exc
    # The journal's keys as the items hold them (an instance ID is a category there).
    latest = journal.load().with_columns(pl.col("instance_id").cast(items["instance_id"].dtype))
    if mode.redrive:
        failed = latest.filter(~pl.col("ok"))
        if mode == Mode.RETRY:
            wider = job.also_redrive()
            failed = failed.filter(pl.col("retryable") | (wider if wider is not None
                                                          else pl.lit(False)))
        return items.join(failed.select(KEY), on=KEY, how="semi")
    return items.join(latest.select(KEY), on=KEY, how="anti")


def execute(rundir: RunDir, run: dict[str, Any], job: Job, options: RunOptions, *, mode: Mode,
             aws_changes: dict[str, Any] | None = None,
             job_changes: dict[str, Any] | None = None) -> int:
    """One execution of a run, under its lock. Signals are only remembered from here on: the
    engine acts on them, and whatever it answered is written before the process exits."""
    with signals.deferred():
        try:
            os.umask(0o077)  # every file of the run, on resume and retry too, is the owner's
            started = utc_now()
            try:
                rundir.clean_temporaries()
                run = record_execution(rundir, run, mode=mode, started=started,
                                       options=options, aws_changes=aws_changes or {},
                                       job_changes=job_changes or {})
                events = EventLog(run_id=rundir.run_id, log_format=options.log_format,
                                  path=rundir.events)
            except OSError as exc:
                raise UsageError(f"cannot write {rundir.path}: {exc.strerror or exc}") from exc
            try:
                return _execute_logged(rundir, run, job, options, events, mode, started)
            finally:
                events.close()
        finally:
            rundir.unlock()


def _execute_logged(rundir: RunDir, run: dict[str, Any], job: Job, options: RunOptions,
                    events: EventLog, mode: Mode, started: datetime) -> int:
    journal = Journal(rundir, type(job).result_schema)
    pending = _pending(rundir, journal, job, mode)
    journal.redrive = mode.redrive
    deadline = parse_deadline(options.deadline, started) if options.deadline else None
    events.emit(
        "run_started", message=f"{mode} {run['job']}: {pending.height} items to do",
        mode=mode, items_pending=pending.height, run_dir=str(rundir.path),
        **_call_totals(journal.calls),
    )
    report = Report(rundir, run, journal, started, quiet_progress=options.progress)
    try:
        report.write("running", journal.calls)
    except OSError as exc:
        raise UsageError(f"cannot write {rundir.summary_json}: {exc.strerror or exc}") from exc
    stop = Stop()
    storage: list[OSError] = []

    def storage_failed(exc: OSError) -> None:
        if not storage:
            storage.append(exc)
        stop(StopReason.ABORTED, f"cannot write the run directory: {exc.strerror or exc}; "
             "free space or fix the mount, then resume")

    journal.on_error = storage_failed
    events.on_error = storage_failed
    with _young_collections_only(), library_warnings(events):
        calls = anyio.run(_run_async, job, options, journal, events, pending, deadline, report,
                          stop)
    try:
        results = journal.finalize()
        report.warned = job.warnings(results)
        job.finish(rundir.path, results)
        state = _final_state(stop, report.counts())
        summary = report.write(state, calls, finished=True, note=stop.message)
    except OSError as exc:
        storage_failed(exc)
        # The disk may be full: the one line below says all there is to say.
        with contextlib.suppress(OSError):
            report.write(StopReason.ABORTED, calls, finished=True, note=stop.message)
        raise StorageError(f"{stop.message} (run directory {rundir.path})") from exc
    quiet = state in ("succeeded", "completed_with_failures")
    # In text mode the closing report on stdout says it all; the log line is for the file.
    events.emit("run_finished", level="info" if quiet else "warning",
                console=options.log_format == "json",
                message=closing_line(summary, stop.message), **{
                    k: summary[k] for k in ("state", "items_succeeded", "items_failed",
                                            "items_pending", "rows_rejected")
                } | _call_totals(calls))
    print_summary(summary, rundir, options.log_format,
                  lambda text: print(text, flush=True))  # noqa: T201
    if options.aws.publish and state == StopReason.INTERRUPTED:
        # Stopped by a signal: no call starts after it, not even an upload.
        events.emit("not_published", level="warning", message=f"not published to "
                    f"{options.aws.publish}: the run was interrupted; resume publishes it")
    elif options.aws.publish:
        from .publish import publish

        published = publish(rundir, options.aws.publish, options.aws)
        events.emit("published", message=f"published {len(published)} files to "
                    f"{options.aws.publish}", files=published)
    if state == "succeeded" and (summary["rows_rejected"] or summary["items_warned"]):
        return 1
    return EXIT_CODES[state]


def _call_totals(calls: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Calls made and throttled so far: the points the notebooks chart rates from."""
    return {"calls_made": sum(c.get("made", 0) for c in calls.values()),
            "calls_throttled": sum(c.get("throttled", 0) for c in calls.values())}


def _final_state(stop: Stop, counts: dict[str, int]) -> str:
    if stop.reason in (StopReason.ABORTED, StopReason.INTERRUPTED):
        return str(stop.reason)
    if stop.reason == StopReason.DEADLINE and counts["items_pending"] > 0:
        return "deadline"
    if counts["items_failed"] or counts["rows_rejected"]:
        return "completed_with_failures"
    return "succeeded"


@contextlib.contextmanager
def _young_collections_only() -> Iterator[None]:
    """A run makes and drops small objects by the million (items, answers, rows), and a full
    pass of the cycle collector walks every object alive, botocore's service models and the
    imports included, again and again: those are frozen out of it, and the young generation
    is collected less often, while the engine runs. Objects in cycles are still collected."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


async def _run_async(
    job: Job, options: RunOptions, journal: Journal, events: EventLog, pending: pl.DataFrame,
    deadline: datetime | None, report: Report, stop: Stop,
) -> dict[str, dict[str, int]]:
    stats = {op: OperationStats(**v) for op, v in journal.calls.items()}
    async with Caller(options.aws, stats=stats, on_retry=_retry_logger(events, options),
                      on_learned=_learned_logger(events)) as caller:
        stop.on_stop(caller.stop_calls)
        with signals.listening(stop.signal):
            if pending.height:
                try:
                    pending = await _fill_scope(pending, caller)
                except Abandoned:
                    return caller.stats_json()
                except CallError as error:
                    stop(StopReason.ABORTED, "cannot tell the caller's account (STS "
                         f"GetCallerIdentity): {error.code}: {error.message}")
                    return caller.stats_json()
            await _engine_run(job, options, journal, events, pending, deadline, report, stop,
                              caller)
        _keep_learned(caller, events)
        return caller.stats_json()


def _keep_learned(caller: Caller, events: EventLog) -> None:
    """The rates learned, for the next run against the same quotas: a hint, so a state
    directory that cannot be written is a warning."""
    try:
        caller.keep_learned()
    except OSError as exc:
        events.emit("state_not_kept", level="warning",
                    message=f"learned rates not kept: {exc.strerror or exc}"
                            f"{f' ({exc.filename})' if exc.filename else ''}")


async def _engine_run(job: Job, options: RunOptions, journal: Journal, events: EventLog,
                      pending: pl.DataFrame, deadline: datetime | None, report: Report,
                      stop: Stop, caller: Caller) -> None:
    progress = _progress(options, pending.height, caller)
    context = Context(aws=caller, notes=Notes(journal.rundir.parts / "notes.jsonl"))
    engine = Engine(
        job=job, context=context, journal=journal, events=events,
        limits=Limits(max_failure_rate=options.max_failure_rate, deadline=deadline),
        concurrency=options.aws.concurrency,
        on_progress=progress.advance if progress else None, stop=stop,
        calls_made=caller.stats_json,
    )
    async with anyio.create_task_group() as group:
        group.start_soon(_report_every, report, caller, events, context.phases, progress)
        group.start_soon(_share_every, caller, events)
        if progress:
            events.console = progress.console  # log lines above the bar, not through it
            with progress:
                await engine.run(iter_batches(pending))
            events.console = None
        else:
            await engine.run(iter_batches(pending))
        group.cancel_scope.cancel()


def _retry_logger(events: EventLog, options: RunOptions) -> Callable[[str, CallError, float],
                                                                      None]:
    """A call that cannot reach its endpoint says so at once, not after all its attempts."""
    where = options.aws.endpoint_url or "AWS"
    said: dict[str, float] = {}

    def log(operation: str, error: CallError, delay: float) -> None:
        if not isinstance(error, TransientError) or error.http_status is not None:
            return
        now = anyio.current_time()
        if now - said.get(operation, -1e9) < 10:
            return
        said[operation] = now
        events.emit("unreachable", level="warning",
                    message=f"{operation}: no answer from {where} ({error.code}: "
                    f"{error.message}); attempt {error.attempts} of "
                    f"{options.aws.max_attempts}, next in {delay:.1f}s",
                    operation=operation, error_code=error.code)

    return log


def _learned_logger(events: EventLog) -> Callable[[tuple[str, str, str], float], None]:
    """A limiter that starts from an earlier run's rate says so: why a run starts at 7.8/s."""

    def log(key: tuple[str, str, str], rate: float) -> None:
        operation, account, region = key
        events.emit("rate_from_last_run",
                    message=f"{operation} in {account}/{region} starts at {rate:.3g}/s, from "
                            "what an earlier run learned (--state-dir)",
                    operation=operation, account_id=account, region=region,
                    rate=round(rate, 3))

    return log


async def _report_every(report: Report, caller: Caller, events: EventLog, phases: Phases,
                        progress: Any, every_s: float = 1.0, log_every: int = 10) -> None:
    """Rewrite ``summary.json`` and log a progress event every ``every_s``, with what the work
    in flight is doing (its phase), which the progress bar shows too."""
    tick = 0
    while True:
        await anyio.sleep(every_s)
        tick += 1
        phase = phases.describe()
        if progress:
            progress.phase(phase)
        calls = caller.stats_json()
        try:
            summary = await anyio.to_thread.run_sync(report.write, "running", calls)
        except OSError as exc:
            if report.journal.on_error is not None:
                report.journal.on_error(exc)
            return
        # Every tick in the file (the notebooks chart calls and throttles over time); on the
        # console every log_every ticks.
        events.emit(
            "progress", console=tick % log_every == 0 and not report.quiet_progress,
            **_call_totals(calls),
            **{k: summary[k] for k in ("items_succeeded", "items_failed", "items_pending",
                                       "calls_per_s")},
            **({"phase": phase} if phase else {}),
        )


async def _share_every(caller: Caller, events: EventLog) -> None:
    """Share each quota with the runs of this host that spend it too (``peers``), and say so
    each time their number changes."""
    while caller.shares_quotas:
        await anyio.sleep(Peers.BEAT_S)
        try:
            changed = await caller.share_quotas()
        except OSError as exc:
            events.emit("quotas_not_shared", level="warning",
                        message="runs of this host cannot share their quotas: "
                                f"{exc.strerror or exc}"
                                f"{f' ({exc.filename})' if exc.filename else ''}")
            return
        for (operation, account, region), runs, rate in changed:
            others = "no other run of this host spends" if runs == 1 else \
                "1 other run of this host spends" if runs == 2 else \
                f"{runs - 1} other runs of this host spend"
            events.emit("quota_shared",
                        message=f"{operation} in {account}/{region}: {others} this quota "
                                f"now; this run goes on at {rate:.3g}/s",
                        operation=operation, account_id=account, region=region, runs=runs,
                        rate=round(rate, 3))


async def _fill_scope(pending: pl.DataFrame, caller: Caller) -> pl.DataFrame:
    """Bare instance IDs run in the default region and the caller's account."""
    if pending["region"].null_count():
        pending = pending.with_columns(pl.col("region").fill_null(caller.default_region))
    if pending["account_id"].null_count():
        region = pending.filter(pl.col("account_id").is_null())["region"][0]
        account = await caller.account(region)
        pending = pending.with_columns(pl.col("account_id").fill_null(account))
    return pending


def _progress(options: RunOptions, total: int, caller: Caller) -> Any:
    if not options.progress or not total:
        return None
    from .progress import RunProgress

    return RunProgress(total, caller)
