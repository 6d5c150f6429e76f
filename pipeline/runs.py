"""Runs from start to end: ``start`` (or continue), ``resume``, ``retry`` and ``status``, as
the command line calls them. Library errors stay ``ConnectBulkError``s here; the CLI turns them
into messages and exit codes.

Every decision about a run directory (does it exist, is it the same input, the same options) is
taken while holding its lock, and a run refused at any point before its ``run.json`` is written
leaves no directory behind.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import polars as pl

from . import __version__, signals
from .aws import Caller, OperationStats
from .crashpoints import crashpoint
from .durations import parse_deadline
from .engine import Engine, Limits, Stop, StopReason
from .errors import Abandoned, CallError, StorageError, TransientError, UsageError
from .events import EventLog
from .inputs import read_input, rejects_frame, sha256_of
from .job import Context, Job, load_job_class
from .journal import KEY, Journal
from .notes import Notes
from .plan import Planned, estimate, iter_batches, plan
from .record import (
    EXIT_CODES,
    Report,
    RunOptions,
    check_options,
    differences,
    ensure_valid,
    record_execution,
)
from .render import closing_line, print_summary
from .rundir import RunDir, iso, utc_now, write_atomic, write_json

# -- run ids and regions ------------------------------------------------------------------------


def expand_run_id(template: str | None, job: str, now: datetime) -> str:
    run_id = (template or "{job}-{timestamp}").format(
        job=job, date=now.strftime("%Y-%m-%d"), timestamp=now.strftime("%Y%m%dT%H%M%SZ"),
    ) if template is None or "{" in (template or "") else template
    if not run_id or "/" in run_id or run_id in (".", ".."):
        raise UsageError(f"--run-id {run_id!r} is not a valid directory name")
    return run_id


def default_region(options: RunOptions) -> str | None:
    settings = options.aws
    if settings.region:
        return settings.region
    import botocore.session
    from botocore.exceptions import ProfileNotFound

    try:
        session = botocore.session.Session(profile=settings.profile)
        region = session.get_config_variable("region")
    except ProfileNotFound as exc:
        raise UsageError(f"AWS profile {settings.profile!r} not found") from exc
    return str(region) if region else None


# -- reading and planning -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Prepared:
    job: Job
    input_path: Path
    sha256: str
    planned: Planned
    rejects: pl.DataFrame
    rows_blank: int


def prepare(job: Job, input_path: Path) -> Prepared:
    table = read_input(input_path, type(job).columns)
    canonical = [c.name for c in type(job).columns]
    normalized = job.normalize(table.frame.select("input_row", *canonical))
    rejects = rejects_frame(table, normalized.rejects)
    planned = plan(job, normalized.items, rows_total=table.frame.height,
                   rows_rejected=rejects.height)
    return Prepared(job, input_path, table.sha256, planned, rejects, table.rows_blank)


def plan_report(job: Job, input_path: Path, options: RunOptions) -> dict[str, Any]:
    prepared = prepare(job, input_path)
    planned = prepared.planned
    items = planned.items
    region = default_region(options)
    if region:
        items = items.with_columns(pl.col("region").fill_null(region))
    figures = estimate(job, items, rate=options.aws.rate, burst=options.aws.burst)
    return {
        "job": type(job).name,
        "input": str(input_path),
        "rows_total": planned.rows_total,
        "rows_rejected": planned.rows_rejected,
        "rows_duplicate": planned.rows_duplicate,
        "rows_blank": prepared.rows_blank,
        "items_total": planned.items_total,
        "instances": planned.items["instance_id"].n_unique(),
        "calls": figures["calls"],
        "estimated_s": figures["estimated_s"],
        "scopes": figures["scopes"],
        "rejects": prepared.rejects.select("input_row", "reason").head(20).to_dicts(),
    }


# -- starting -----------------------------------------------------------------------------------

def start(job_name: str, input_path: Path, job_options: dict[str, Any],
          options: RunOptions, *, confirm: Callable[[str], bool] | None = None) -> int:
    """Start a run, or continue the run of the same job, input and options in its directory.
    A mutating job asks ``confirm`` first, unless ``--yes``; without a way to ask (no TTY) and
    without ``--yes`` it refuses."""
    job = load_job_class(job_name)(**job_options)
    check_options(options)
    now = utc_now()
    rundir = RunDir(Path(options.out) / expand_run_id(options.run_id, job_name, now))
    created = rundir.claim()
    try:
        if rundir.exists():
            run = _same_run(rundir, job_name, input_path, job_options, options)
            mode = "resume"
        else:
            if not created and _foreign(rundir):
                raise UsageError(f"{rundir.path} exists and is not a run directory; use another "
                                 "--run-id or --out")
            run = _create(rundir, job, input_path, job_options, options, confirm, now)
            mode = "run"
    except BaseException:
        if created:
            rundir.discard()
        else:
            rundir.unlock()
        raise
    return _execute(rundir, run, job, options, mode=mode)


def _foreign(rundir: RunDir) -> bool:
    """A directory holding anything but what a refused or killed start of ours leaves."""
    return any(p.name not in ("lock", "parts") for p in rundir.path.iterdir())


def _same_run(rundir: RunDir, job_name: str, input_path: Path, job_options: dict[str, Any],
              options: RunOptions) -> dict[str, Any]:
    run = rundir.read_run()
    ensure_valid(run, str(rundir.run_json))
    if run["job"] != job_name:
        raise UsageError(f"{rundir.path} is a {run['job']} run, not {job_name}")
    if run["input"]["sha256"] != sha256_of_input(input_path):
        raise UsageError(
            f"{rundir.path} was started with another input (sha256 "
            f"{run['input']['sha256'][:12]}…); use another --run-id"
        )
    differ = differences(run, options, job_options)
    if differ:
        raise UsageError(
            f"{rundir.path} was started with other options: {'; '.join(differ)}. Give the "
            f"run's options, use another --run-id, or change access and pacing options with "
            f"connect-bulk resume {rundir.path} --OPTION VALUE"
        )
    return run


def sha256_of_input(path: Path) -> str:
    try:
        return sha256_of(path)
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read: {exc.strerror or exc}") from exc


def _create(rundir: RunDir, job: Job, input_path: Path, job_options: dict[str, Any],
            options: RunOptions, confirm: Callable[[str], bool] | None,
            now: datetime) -> dict[str, Any]:
    prepared = prepare(job, input_path)
    items = prepared.planned.items
    region = default_region(options)
    if items.filter(pl.col("region").is_null()).height and not region:
        raise UsageError("no AWS region for the bare instance IDs: give --region or set "
                         "AWS_REGION (instance ARNs carry their own)")
    if type(job).mutating and not options.yes and items.height:
        if confirm is None:
            raise UsageError(f"{type(job).name} changes AWS state: run it from a terminal to "
                             "confirm, or pass --yes")
        if not confirm(_what_it_will_do(job, items, region, options)):
            raise UsageError("not confirmed; nothing was called")
    os.umask(0o077)
    try:
        rundir.create()
        write_atomic(rundir.items, lambda tmp: items.write_parquet(tmp))
        write_atomic(rundir.rejects, lambda tmp: prepared.rejects.write_parquet(tmp))
        run = {
            "run_id": rundir.run_id,
            "job": type(job).name,
            "input": {"path": str(input_path.resolve()), "sha256": prepared.sha256,
                      "rows": prepared.planned.rows_total + prepared.rows_blank},
            "counts": {
                "rows_total": prepared.planned.rows_total,
                "rows_rejected": prepared.planned.rows_rejected,
                "rows_duplicate": prepared.planned.rows_duplicate,
                "rows_blank": prepared.rows_blank,
                "items_total": prepared.planned.items_total,
            },
            "options": options.to_json(),
            "job_options": job_options,
            "version": __version__,
            "created_at": iso(now),
        }
        # run.json last: a directory without it is a start that never happened.
        with signals.deferred():
            write_json(rundir.run_json, run)
            crashpoint("run-created")
    except OSError as exc:
        raise UsageError(f"cannot write {rundir.path}: {exc.strerror or exc}") from exc
    return run


def _what_it_will_do(job: Job, items: pl.DataFrame, region: str | None,
                     options: RunOptions) -> str:
    scopes = (
        items.group_by("account_id", "region").len().sort("account_id", "region",
                                                          nulls_last=True)
    )
    lines = [f"{type(job).name} will change {items.height} instances:"]
    lines += [
        f"  account {s['account_id'] or 'of the credentials'}, region {s['region'] or region}: "
        f"{s['len']} instances"
        for s in scopes.iter_rows(named=True)
    ]
    lines += job.describe(items)
    if options.aws.endpoint_url:
        lines.append(f"  endpoint {options.aws.endpoint_url}")
    lines.append("Go ahead?")
    return "\n".join(lines)


# -- continuing ---------------------------------------------------------------------------------

def _open(run_dir: Path) -> tuple[RunDir, dict[str, Any]]:
    rundir = RunDir(run_dir)
    run = rundir.read_run()
    ensure_valid(run, str(rundir.run_json))
    rundir.lock()
    return rundir, rundir.read_run()  # read again under the lock


def resume(run_dir: Path, *, overrides: dict[str, Any] | None = None, log_format: str = "text",
           progress: bool = False, deadline: str | None = None) -> int:
    """Continue a run with its options; ``overrides`` (AwsSettings fields) replace the
    recorded ones and are recorded. A deadline belongs to the execution it stopped, not to the
    run: a resumed run has none unless given one again."""
    return _continue(run_dir, "resume", overrides or {}, {}, log_format=log_format,
                     progress=progress, deadline=deadline)


def retry(run_dir: Path, *, everything: bool, overrides: dict[str, Any] | None = None,
          job_overrides: dict[str, Any] | None = None, log_format: str = "text",
          progress: bool = False, deadline: str | None = None) -> int:
    return _continue(run_dir, "retry-all" if everything else "retry", overrides or {},
                     job_overrides or {}, log_format=log_format, progress=progress,
                     deadline=deadline)


def _continue(run_dir: Path, mode: str, aws_changes: dict[str, Any],
              job_changes: dict[str, Any], **per_execution: Any) -> int:
    rundir, run = _open(run_dir)
    try:
        job_class = load_job_class(run["job"])
        refused = sorted(set(job_changes) - job_class.redrive_options)
        if refused:
            raise UsageError(f"{', '.join('--' + n.replace('_', '-') for n in refused)} does "
                             f"not apply to {run['job']} runs")
        options = RunOptions.from_json(run["options"], **per_execution).with_aws(**aws_changes)
        check_options(options)
        job = job_class(**(run["job_options"] | job_changes))
    except BaseException:
        rundir.unlock()
        raise
    return _execute(rundir, run, job, options, mode=mode, aws_changes=aws_changes,
                    job_changes=job_changes)


# -- executing ----------------------------------------------------------------------------------

def _pending(rundir: RunDir, journal: Journal, job: Job, mode: str) -> pl.DataFrame:
    if not rundir.items.is_file():
        from .errors import DamagedRun

        raise DamagedRun(rundir.items, "missing (the run's planned items)")
    try:
        items = pl.read_parquet(rundir.items)
    except pl.exceptions.PolarsError as exc:
        from .errors import DamagedRun

        raise DamagedRun(rundir.items, f"not a readable Parquet file ({exc})") from exc
    latest = journal.load()
    if mode.startswith("retry"):
        failed = latest.filter(~pl.col("ok"))
        if mode == "retry":
            wider = job.also_redrive()
            failed = failed.filter(pl.col("retryable") | (wider if wider is not None
                                                          else pl.lit(False)))
        return items.join(failed.select(KEY), on=KEY, how="semi")
    return items.join(latest.select(KEY), on=KEY, how="anti")


def _execute(rundir: RunDir, run: dict[str, Any], job: Job, options: RunOptions, *, mode: str,
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
                    events: EventLog, mode: str, started: datetime) -> int:
    journal = Journal(rundir, type(job).result_schema)
    pending = _pending(rundir, journal, job, mode)
    journal.redrive = mode.startswith("retry")
    deadline = parse_deadline(options.deadline, started) if options.deadline else None
    events.emit(
        "run_started", message=f"{mode} {run['job']}: {pending.height} items to do",
        mode=mode, items_pending=pending.height, run_dir=str(rundir.path),
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
    calls = anyio.run(_run_async, job, options, journal, events, pending, deadline, report, stop)
    try:
        report.warned = job.warnings(journal.finalize())
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
                })
    print_summary(summary, rundir, options.log_format,
                  lambda text: print(text, flush=True))  # noqa: T201
    if state == "succeeded" and (summary["rows_rejected"] or summary["items_warned"]):
        return 1
    return EXIT_CODES[state]


def _final_state(stop: Stop, counts: dict[str, int]) -> str:
    if stop.reason in (StopReason.ABORTED, StopReason.INTERRUPTED):
        return str(stop.reason)
    if stop.reason == StopReason.DEADLINE and counts["items_pending"] > 0:
        return "deadline"
    if counts["items_failed"] or counts["rows_rejected"]:
        return "completed_with_failures"
    return "succeeded"


async def _run_async(
    job: Job, options: RunOptions, journal: Journal, events: EventLog, pending: pl.DataFrame,
    deadline: datetime | None, report: Report, stop: Stop,
) -> dict[str, dict[str, int]]:
    stats = {op: OperationStats(**v) for op, v in journal.calls.items()}
    async with Caller(options.aws, stats=stats, on_retry=_retry_logger(events, options)) \
            as caller:
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
        return caller.stats_json()


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
    )
    async with anyio.create_task_group() as group:
        group.start_soon(_report_every, report, caller, events, stop, 1.0, 10)
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


async def _report_every(report: Report, caller: Caller, events: EventLog, stop: Stop,
                        every_s: float, log_every: int = 5) -> None:
    """Rewrite ``summary.json`` and log a progress event every ``every_s``."""
    tick = 0
    while True:
        await anyio.sleep(every_s)
        tick += 1
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
            calls_made=sum(c["made"] for c in calls.values()),
            calls_throttled=sum(c["throttled"] for c in calls.values()),
            **{k: summary[k] for k in ("items_succeeded", "items_failed", "items_pending",
                                       "calls_per_s")},
        )


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


# -- looking ------------------------------------------------------------------------------------

def status(run_dir: Path) -> dict[str, Any]:
    """The run's summary as it stands; a run nobody holds that says ``running`` was killed.
    Read-only: works on a read-only mount, and on a run another process holds."""
    rundir = RunDir(run_dir)
    run = rundir.read_run()
    ensure_valid(run, str(rundir.run_json))
    summary = rundir.read_summary()
    if not rundir.is_locked():
        Journal(rundir, {}).check()
        if summary.get("state", "running") == "running":
            summary |= {"state": "interrupted",
                        "note": "no process holds the run; resume continues it"}
    if not summary:
        summary = {"run_id": rundir.run_id, "job": run["job"], "state": "interrupted",
                   "note": "it never got to its first summary; resume continues it"}
    return summary | {"input": run["input"], "created_at": run["created_at"],
                      "run_dir": str(rundir.path)}


__all__ = ["RunOptions", "plan_report", "resume", "retry", "start", "status"]
