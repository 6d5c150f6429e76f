"""Runs from start to end: ``start`` (or continue), ``resume``, ``retry``, ``plan`` and
``status``, as the command line calls them. Library errors stay ``ConnectBulkError``s here; the
CLI turns them into messages and exit codes."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import polars as pl

from . import __version__
from .aws import AwsSettings, Caller, OperationStats
from .durations import parse_deadline
from .engine import Engine, Limits, Stop
from .errors import CallError, RunLocked, UsageError
from .events import EventLog
from .inputs import read_input, rejects_frame, sha256_of
from .job import Context, Job, load_job_class
from .journal import KEY, Journal, elapsed_since
from .notes import Notes
from .plan import Planned, estimate, iter_batches, plan
from .rundir import RunDir, iso, utc_now, write_atomic, write_json

EXIT_CODES = {"succeeded": 0, "completed_with_failures": 1, "aborted": 3, "deadline": 4,
              "interrupted": 130}


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    out: str = "data/runs"
    run_id: str | None = None
    aws: AwsSettings = field(default_factory=AwsSettings)
    max_failure_rate: float | None = None
    deadline: str | None = None
    log_format: str = "text"
    progress: bool = False
    yes: bool = False

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("progress")
        data.pop("log_format")
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], **overrides: Any) -> RunOptions:
        data = dict(data)
        data["aws"] = AwsSettings(**data.get("aws", {}))
        return cls(**(data | overrides))


# -- run ids --------------------------------------------------------------------

def expand_run_id(template: str | None, job: str, now: datetime) -> str:
    run_id = (template or "{job}-{timestamp}").format(
        job=job, date=now.strftime("%Y-%m-%d"), timestamp=now.strftime("%Y%m%dT%H%M%SZ"),
    ) if template is None or "{" in (template or "") else template
    if not run_id or "/" in run_id or run_id in (".", ".."):
        raise UsageError(f"--run-id {run_id!r} is not a valid directory name")
    return run_id


def default_region(settings: AwsSettings) -> str | None:
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


# -- reading and planning ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Prepared:
    job: Job
    input_path: Path
    sha256: str
    planned: Planned
    rejects: pl.DataFrame


def prepare(job: Job, input_path: Path) -> Prepared:
    table = read_input(input_path, type(job).columns)
    canonical = [c.name for c in type(job).columns]
    normalized = job.normalize(table.frame.select("input_row", *canonical))
    rejects = rejects_frame(table, normalized.rejects)
    planned = plan(job, normalized.items, rows_total=table.frame.height,
                   rows_rejected=rejects.height)
    return Prepared(job, input_path, sha256_of(input_path), planned, rejects)


def plan_report(job: Job, input_path: Path, options: RunOptions) -> dict[str, Any]:
    prepared = prepare(job, input_path)
    planned = prepared.planned
    figures = estimate(job, planned.items, rate=options.aws.rate, burst=options.aws.burst)
    return {
        "job": type(job).name,
        "input": str(input_path),
        "rows_total": planned.rows_total,
        "rows_rejected": planned.rows_rejected,
        "rows_duplicate": planned.rows_duplicate,
        "items_total": planned.items_total,
        "instances": planned.items["instance_id"].n_unique(),
        "calls": figures["calls"],
        "estimated_s": figures["estimated_s"],
        "scopes": figures["scopes"],
        "rejects": prepared.rejects.select("input_row", "reason").head(20).to_dicts(),
    }


# -- running ----------------------------------------------------------------------------------

def start(job_name: str, input_path: Path, job_options: dict[str, Any],
          options: RunOptions, *, confirm: Callable[[str], bool] | None = None) -> int:
    """Start (or continue) a run. A mutating job asks ``confirm`` first, unless ``--yes``;
    without a way to ask (no TTY) and without ``--yes`` it refuses."""
    job = load_job_class(job_name)(**job_options)
    template = options.aws.role_arn_template
    if template and ("{account}" not in template or not template.startswith("arn:")):
        raise UsageError(f"--role-arn-template {template!r}: give a role ARN with {{account}}, "
                         "e.g. arn:aws:iam::{account}:role/ConnectBulk")
    now = utc_now()
    run_id = expand_run_id(options.run_id, job_name, now)
    rundir = RunDir(Path(options.out) / run_id)
    if rundir.exists():
        run = rundir.read_run()
        if run["job"] != job_name:
            raise UsageError(f"{rundir.path} is a {run['job']} run, not {job_name}")
        if run["input"]["sha256"] != sha256_of(input_path):
            raise UsageError(
                f"{rundir.path} was started with another input (sha256 "
                f"{run['input']['sha256'][:12]}…); use another --run-id"
            )
        return resume(rundir.path, log_format=options.log_format, progress=options.progress,
                      deadline=options.deadline)
    prepared = prepare(job, input_path)
    items = prepared.planned.items
    region = default_region(options.aws)
    if items.filter(pl.col("region").is_null()).height and not region:
        raise UsageError("no AWS region for the bare instance IDs: give --region or set "
                         "AWS_REGION (instance ARNs carry their own)")
    if type(job).mutating and not options.yes and items.height:
        if confirm is None:
            raise UsageError(f"{job_name} changes AWS state: run it from a terminal to confirm, "
                             "or pass --yes")
        if not confirm(_what_it_will_do(job, items, region, options)):
            raise UsageError("not confirmed; nothing was called")
    os.umask(0o077)
    rundir.create()
    rundir.lock()
    write_atomic(rundir.items, lambda tmp: items.write_parquet(tmp))
    write_atomic(rundir.rejects, lambda tmp: prepared.rejects.write_parquet(tmp))
    write_json(rundir.run_json, {
        "run_id": run_id,
        "job": job_name,
        "input": {"path": str(input_path.resolve()), "sha256": prepared.sha256,
                  "rows": prepared.planned.rows_total},
        "counts": {
            "rows_total": prepared.planned.rows_total,
            "rows_rejected": prepared.planned.rows_rejected,
            "rows_duplicate": prepared.planned.rows_duplicate,
            "items_total": prepared.planned.items_total,
        },
        "options": options.to_json(),
        "job_options": job_options,
        "version": __version__,
        "created_at": iso(now),
    })
    return _execute(rundir, job, options, mode="run")


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


def _load(run_dir: Path) -> tuple[RunDir, dict[str, Any]]:
    rundir = RunDir(run_dir)
    run = rundir.read_run()
    return rundir, run


def _continued_options(run: dict[str, Any], **overrides: Any) -> RunOptions:
    """The options a run started with, for resume and retry. A deadline belongs to the
    execution it stopped, not to the run: a resumed run has none unless given one again."""
    return RunOptions.from_json(run["options"], **({"deadline": None} | overrides))


def resume(run_dir: Path, *, log_format: str = "text", progress: bool = False,
           deadline: str | None = None) -> int:
    rundir, run = _load(run_dir)
    options = _continued_options(run, log_format=log_format, progress=progress,
                                 deadline=deadline)
    job = load_job_class(run["job"])(**run["job_options"])
    rundir.lock()
    return _execute(rundir, job, options, mode="resume")


def retry(run_dir: Path, *, everything: bool, log_format: str = "text",
          progress: bool = False, deadline: str | None = None) -> int:
    rundir, run = _load(run_dir)
    options = _continued_options(run, log_format=log_format, progress=progress,
                                 deadline=deadline)
    job = load_job_class(run["job"])(**run["job_options"])
    rundir.lock()
    return _execute(rundir, job, options, mode="retry-all" if everything else "retry")


def _pending(rundir: RunDir, journal: Journal, mode: str) -> pl.DataFrame:
    items = pl.read_parquet(rundir.items)
    latest = journal.load()
    if mode.startswith("retry"):
        failed = latest.filter(~pl.col("ok"))
        if mode == "retry":
            failed = failed.filter(pl.col("retryable"))
        return items.join(failed.select(KEY), on=KEY, how="semi")
    return items.join(latest.select(KEY), on=KEY, how="anti")


def _execute(rundir: RunDir, job: Job, options: RunOptions, *, mode: str) -> int:
    run = rundir.read_run()
    os.umask(0o077)  # every file of the run, on resume and retry too, is the owner's only
    rundir.clean_temporaries()
    events = EventLog(run_id=rundir.run_id, log_format=options.log_format, path=rundir.events)
    journal = Journal(rundir, type(job).result_schema)
    pending = _pending(rundir, journal, mode)
    journal.redrive = mode.startswith("retry")
    started = utc_now()
    try:
        deadline = parse_deadline(options.deadline, started) if options.deadline else None
        events.emit(
            "run_started", message=f"{mode} {run['job']}: {pending.height} items to do",
            mode=mode, items_pending=pending.height, run_dir=str(rundir.path),
        )
        report = Report(rundir, run, journal, started, quiet_progress=options.progress)
        report.write("running", journal.calls)
        stop, calls = anyio.run(_run_async, job, options, journal, events, pending, deadline,
                                report)
        journal.finalize()
        state = _final_state(stop, report.counts())
        summary = report.write(state, calls, finished=True, note=stop.message)
        quiet = state in ("succeeded", "completed_with_failures")
        # In text mode the closing report on stdout says it all; the log line is for the file.
        events.emit("run_finished", level="info" if quiet else "warning",
                    console=options.log_format == "json",
                    message=_closing_line(summary, stop), **{
                        k: summary[k] for k in ("state", "items_succeeded", "items_failed",
                                                "items_pending", "rows_rejected")
                    })
        _print_summary(summary, rundir, options.log_format)
        return EXIT_CODES[state] if not (state == "succeeded" and summary["rows_rejected"]) \
            else 1
    finally:
        events.close()
        rundir.unlock()


def _print_summary(summary: dict[str, Any], rundir: RunDir, log_format: str) -> None:
    """The closing report on stdout: JSON for machines, a few lines for people."""
    if log_format == "json":
        print(json.dumps(summary), flush=True)  # noqa: T201
        return
    lines = [
        f"{summary['state']} in {summary['elapsed_s']}s",
        *([f"  stopped  {summary['note']}"] if summary.get("note") else []),
        f"  items    {summary['items_total']}: {summary['items_succeeded']} succeeded, "
        f"{summary['items_failed']} failed, {summary['items_pending']} pending",
        f"  rows     {summary['rows_total']}: {summary['rows_rejected']} rejected, "
        f"{summary['rows_duplicate']} duplicates",
    ]
    lines += [
        f"  calls    {op}: {c['made']} made, {c['throttled']} throttled, {c['retried']} "
        f"retried, {c['errors']} errors"
        for op, c in summary["calls"].items()
    ]
    lines += [
        f"  results  {rundir.results}",
        f"  failures {rundir.failures}",
        f"  rejects  {rundir.rejects}",
    ]
    print("\n".join(lines), flush=True)  # noqa: T201


def _final_state(stop: Stop, counts: dict[str, int]) -> str:
    if stop.reason == "aborted":
        return "aborted"
    if stop.reason == "interrupted":
        return "interrupted"
    if stop.reason == "deadline" and counts["items_pending"] > 0:
        return "deadline"
    if counts["items_failed"] or counts["rows_rejected"]:
        return "completed_with_failures"
    return "succeeded"


def _closing_line(summary: dict[str, Any], stop: Stop) -> str:
    text = (f"{summary['state']}: {summary['items_succeeded']} succeeded, "
            f"{summary['items_failed']} failed, {summary['items_pending']} pending, "
            f"{summary['rows_rejected']} rejected, {summary['rows_duplicate']} duplicate rows")
    return f"{text}; {stop.message}" if stop.message else text


class Report:
    """``summary.json``, rewritten while the run goes and at its end."""

    def __init__(self, rundir: RunDir, run: dict[str, Any], journal: Journal,
                 started: datetime, *, quiet_progress: bool = False) -> None:
        self.rundir, self.run, self.journal, self.started = rundir, run, journal, started
        self.quiet_progress = quiet_progress  # a progress bar shows it already

    def counts(self) -> dict[str, int]:
        fixed = self.run["counts"]
        succeeded, failed = self.journal.counts.succeeded, self.journal.counts.failed
        return {
            "rows_total": fixed["rows_total"],
            "rows_rejected": fixed["rows_rejected"],
            "rows_duplicate": fixed["rows_duplicate"],
            "items_total": fixed["items_total"],
            "items_succeeded": succeeded,
            "items_failed": failed,
            "items_pending": fixed["items_total"] - succeeded - failed,
        }

    def write(self, state: str, calls: dict[str, dict[str, int]], *,
              finished: bool = False, note: str = "") -> dict[str, Any]:
        elapsed = elapsed_since(self.started)
        counts = self.counts()
        made = sum(c.get("made", 0) for c in calls.values())
        summary = {
            "run_id": self.rundir.run_id,
            "job": self.run["job"],
            "state": state,
            **counts,
            "calls": calls,
            "started_at": iso(self.started),
            "finished_at": iso(utc_now()) if finished else None,
            "elapsed_s": elapsed,
            "calls_per_s": round(made / elapsed, 2) if elapsed else 0.0,
            "run_dir": str(self.rundir.path),
        }
        if note:
            summary["note"] = note
        write_json(self.rundir.summary_json, summary)
        return summary


async def _run_async(
    job: Job, options: RunOptions, journal: Journal, events: EventLog, pending: pl.DataFrame,
    deadline: datetime | None, report: Report,
) -> tuple[Stop, dict[str, dict[str, int]]]:
    stats = {op: OperationStats(**v) for op, v in journal.calls.items()}
    async with Caller(options.aws, stats=stats) as caller:
        if pending.height:
            try:
                pending = await _fill_scope(pending, caller)
            except CallError as error:
                stop = Stop()
                stop("aborted", f"cannot tell the caller's account (STS GetCallerIdentity): "
                     f"{error.code}: {error.message}")
                return stop, caller.stats_json()
        progress = _progress(options, pending.height, caller)
        context = Context(aws=caller, notes=Notes(journal.rundir.parts / "notes.jsonl"))
        engine = Engine(
            job=job, context=context, journal=journal, events=events,
            limits=Limits(max_failure_rate=options.max_failure_rate, deadline=deadline),
            concurrency=options.aws.concurrency,
            on_progress=progress.advance if progress else None,
        )
        async with anyio.create_task_group() as group:
            group.start_soon(_report_every, report, caller, events, 1.0, 10)
            if progress:
                events.console = progress.console  # log lines above the bar, not through it
                with progress:
                    stop = await engine.run(iter_batches(pending))
                events.console = None
            else:
                stop = await engine.run(iter_batches(pending))
            group.cancel_scope.cancel()
        return stop, caller.stats_json()


async def _report_every(report: Report, caller: Caller, events: EventLog, every_s: float,
                        log_every: int = 5) -> None:
    """Rewrite ``summary.json`` and log a progress event every ``every_s``."""
    tick = 0
    while True:
        await anyio.sleep(every_s)
        tick += 1
        calls = caller.stats_json()
        summary = await anyio.to_thread.run_sync(report.write, "running", calls)
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


def status(run_dir: Path) -> dict[str, Any]:
    rundir = RunDir(run_dir)
    run = rundir.read_run()
    summary = rundir.read_summary()
    if summary.get("state") == "running":
        try:
            rundir.lock()
        except RunLocked:
            pass  # a process holds it: it is running
        else:
            rundir.unlock()
            summary |= {"state": "interrupted",
                        "note": "no process holds the run; resume continues it"}
    return summary | {"input": run["input"], "created_at": run["created_at"]}


__all__ = ["RunOptions", "parse_deadline", "plan_report", "resume", "retry", "start", "status"]
