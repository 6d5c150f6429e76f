"""Runs from start to end: ``start`` (or continue), ``resume``, ``retry`` and ``status``, as
the command line calls them. Library errors stay ``ConnectBulkError``s here; the CLI turns them
into messages and exit codes.

Every decision about a run directory (does it exist, is it the same input, the same options) is
taken while holding its lock, and a run refused at any point before its ``run.json`` is written
leaves no directory behind.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from . import __version__, signals
from .crashpoints import crashpoint
from .errors import UsageError, aws_setup_refused
from .execution import execute
from .inputs import sha256_of
from .job import Job, load_job_class
from .journal import Journal
from .parts import INTERNAL, PARQUET
from .plan import estimate, prepare
from .record import Mode, RunOptions, check_options, differences, ensure_valid
from .rundir import RunDir, atomic_write, iso, utc_now, write_json
from .shards import Shard, deal, take

# -- run ids and regions ------------------------------------------------------------------------


def expand_run_id(template: str | None, job: str, now: datetime) -> str:
    run_id = (template or "{job}-{timestamp}").format(
        job=job, date=now.strftime("%Y-%m-%d"), timestamp=now.strftime("%Y%m%dT%H%M%SZ"),
    ) if template is None or "{" in (template or "") else template
    if not run_id or "/" in run_id or run_id in (".", ".."):
        raise UsageError(f"--run-id {run_id!r} is not a valid directory name")
    return run_id


def default_region(options: RunOptions, *, check_config: bool = False) -> str | None:
    """``--region``, or the profile's. ``check_config``: read the AWS config and credentials
    files even when ``--region`` is given (a new run, before its directory is made: a missing
    profile or a file that does not parse is refused there, not once the run has started)."""
    settings = options.aws
    if settings.region and not check_config:
        return settings.region
    import botocore.session  # not the engine's session: planning needs none of aiobotocore
    from botocore.exceptions import ConfigParseError, ProfileNotFound

    try:
        configured = botocore.session.Session(
            profile=settings.profile).get_config_variable("region")
    except (ProfileNotFound, ConfigParseError) as exc:
        raise aws_setup_refused(exc, settings.profile) from exc
    region = settings.region or configured
    return str(region) if region else None


def plan_report(job: Job, input_path: Path, options: RunOptions, *,
                shards: int | None = None) -> dict[str, Any]:
    """What ``plan`` prints: of the whole input, or of ``--shard K/N``'s part of it; with
    ``shards``, how the input's scopes would be dealt to that many shards."""
    prepared = prepare(job, input_path)
    planned = prepared.planned
    items = planned.items
    if options.shard:
        items = take(items, Shard.parse(options.shard))
    region = default_region(options)
    if region:
        items = items.with_columns(pl.col("region").fill_null(region))
    figures = estimate(job, items, rate=options.aws.rate, burst=options.aws.burst)
    report = {
        "job": type(job).name,
        "input": str(input_path),
        "rows_total": planned.rows_total,
        "rows_rejected": planned.rows_rejected,
        "rows_duplicate": planned.rows_duplicate,
        "rows_blank": prepared.rows_blank,
        "items_total": items.height,
        "instances": items["instance_id"].n_unique(),
        "calls": figures["calls"],
        "estimated_s": figures["estimated_s"],
        "scopes": figures["scopes"],
        "rejects": prepared.rejects.select("input_row", "reason").head(20).to_dicts(),
    }
    if options.shard:
        report["shard"] = options.shard
    if shards:
        report["shards"] = _deal_report(job, items, shards, options)
    return report


def _deal_report(job: Job, items: pl.DataFrame, n: int,
                 options: RunOptions) -> list[dict[str, Any]]:
    """Each of ``n`` shards: its scopes, items, calls and estimated time."""
    dealt = deal(items, n)
    report = []
    for k in range(n):
        mine = take(items, Shard(k, n), dealt)
        figures = estimate(job, mine, rate=options.aws.rate, burst=options.aws.burst)
        scopes = dealt.filter(pl.col("shard") == k)
        report.append({"shard": f"{k}/{n}", "items": mine.height,
                       "calls": int(scopes["calls"].sum()),
                       "estimated_s": figures["estimated_s"],
                       "scopes": scopes.select("account_id", "region", "items", "calls")
                       .to_dicts()})
    return report


# -- starting -----------------------------------------------------------------------------------

def start(job_name: str, input_path: Path, job_options: dict[str, Any],
          options: RunOptions, *, confirm: Callable[[str], bool] | None = None) -> int:
    """Start a run, or continue the run of the same job, input and options in its directory.
    A mutating job asks ``confirm`` first, unless ``--yes``; without a way to ask (no TTY) and
    without ``--yes`` it refuses."""
    job = load_job_class(job_name)(**job_options)
    check_options(options)
    now = utc_now()
    run_id = expand_run_id(options.run_id, job_name, now)
    if options.shard:
        run_id += Shard.parse(options.shard).suffix
    rundir = RunDir(Path(options.out) / run_id)
    created = rundir.claim()
    try:
        if rundir.exists():
            run = _same_run(rundir, job_name, input_path, job_options, options)
            mode = Mode.RESUME
        else:
            if not created and _foreign(rundir):
                raise UsageError(f"{rundir.path} exists and is not a run directory; use another "
                                 "--run-id or --out")
            run = _create(rundir, job, input_path, job_options, options, confirm, now)
            mode = Mode.RUN
    except BaseException:
        if created:
            rundir.discard()
        else:
            rundir.unlock()
        raise
    return execute(rundir, run, job, options, mode=mode)


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
    shard_record: dict[str, Any] = {}
    if options.shard:
        shard = Shard.parse(options.shard)
        dealt = deal(items, shard.n)
        items = take(items, shard, dealt)
        # Which shard this run is, and of which scopes.
        shard_record = {"shard": {"k": shard.k, "n": shard.n, "scopes": dealt.filter(
            pl.col("shard") == shard.k).drop("shard").to_dicts()}}
    region = default_region(options, check_config=True)
    if items.filter(pl.col("region").is_null()).height and not region:
        raise UsageError("no AWS region for the bare instance IDs: give --region or set "
                         "AWS_REGION (instance ARNs carry their own)")
    if job.changes_state and not options.yes and items.height:
        if confirm is None:
            raise UsageError(f"{type(job).name} changes AWS state: run it from a terminal to "
                             "confirm, or pass --yes")
        if not confirm(_what_it_will_do(job, items, region, options)):
            raise UsageError("not confirmed; nothing was called")
    os.umask(0o077)
    try:
        rundir.create()
        with atomic_write(rundir.items) as tmp:
            items.write_parquet(tmp, **INTERNAL)
        with atomic_write(rundir.rejects) as tmp:
            prepared.rejects.write_parquet(tmp, **PARQUET)
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
                "items_total": items.height,
            },
            "options": options.to_json(),
            "job_options": job_options,
            **shard_record,
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
    lines = [f"{type(job).name} will change AWS state for {items.height} items:"]
    lines += [
        f"  account {s['account_id'] or 'of the credentials'}, region {s['region'] or region}: "
        f"{s['len']} items"
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
    return _continue(run_dir, Mode.RESUME, overrides or {}, {}, log_format=log_format,
                     progress=progress, deadline=deadline)


def retry(run_dir: Path, *, everything: bool, overrides: dict[str, Any] | None = None,
          job_overrides: dict[str, Any] | None = None, log_format: str = "text",
          progress: bool = False, deadline: str | None = None) -> int:
    return _continue(run_dir, Mode.RETRY_ALL if everything else Mode.RETRY, overrides or {},
                     job_overrides or {}, log_format=log_format, progress=progress,
                     deadline=deadline)


def _continue(run_dir: Path, mode: Mode, aws_changes: dict[str, Any],
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
    return execute(rundir, run, job, options, mode=mode, aws_changes=aws_changes,
                    job_changes=job_changes)


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
