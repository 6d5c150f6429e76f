"""A run's record: its options, ``run.json`` (what was asked, once, plus each execution) and
``summary.json`` (where it stands, rewritten while it runs).

Options are compared and overridden by name here, so that ``run`` on an existing run directory
can name each option that differs, and ``resume``/``retry`` can take the access and pacing
options again and record them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from .aws import AwsSettings
from .errors import UsageError
from .journal import Journal, elapsed_since
from .rundir import RunDir, iso, utc_now, write_json

EXIT_CODES = {"succeeded": 0, "completed_with_failures": 1, "aborted": 3, "deadline": 4,
              "interrupted": 130}
#: AwsSettings fields whose command-line name is not the field's own
FLAG_NAMES = {"read_timeout_s": "call-timeout"}
#: what ``resume`` and ``retry`` may give again (SPEC §2), as AwsSettings fields
OVERRIDABLE = ("profile", "region", "endpoint_url", "role_arn_template", "rate", "burst",
               "adaptive", "concurrency", "max_attempts", "read_timeout_s", "state_dir",
               "publish")
#: options of one execution, not of the run: never compared, never inherited
PER_EXECUTION = ("out", "run_id", "deadline", "log_format", "progress", "yes")


class Mode(StrEnum):
    """What an execution of a run does: its pending items, or a redrive of its failures."""

    RUN = "run"
    RESUME = "resume"
    RETRY = "retry"  # the retryable failures (and what the job's redrive options widen to)
    RETRY_ALL = "retry-all"  # every failure

    @property
    def redrive(self) -> bool:
        return self in (Mode.RETRY, Mode.RETRY_ALL)


def flag(name: str) -> str:
    return "--" + FLAG_NAMES.get(name, name).replace("_", "-")


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
    #: ``K/N``: this run is shard K of N of its input (``shards``)
    shard: str | None = None

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

    def compared(self) -> dict[str, Any]:
        """The options that make a run what it is, flat: ``run`` refuses others."""
        flat = {k: v for k, v in asdict(self.aws).items()
                if k not in ("connect_timeout_s", "state_dir", "publish")}
        return flat | {"max_failure_rate": self.max_failure_rate, "shard": self.shard}

    def with_aws(self, **changes: Any) -> RunOptions:
        return replace(self, aws=replace(self.aws, **changes))


def differences(run: dict[str, Any], options: RunOptions,
                job_options: dict[str, Any]) -> list[str]:
    """Each option given now that differs from the run's, as ``--name NOW (run: THEN)``."""
    recorded = RunOptions.from_json(run["options"]).compared()
    now = options.compared()
    named = [(name, now[name], recorded.get(name)) for name in now]
    recorded_job = run.get("job_options", {})
    named += [(name, value, recorded_job.get(name)) for name, value in job_options.items()]
    return [f"{flag(name)} {_shown(value)} (the run has {_shown(then)})"
            for name, value, then in named if value != then]


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def aws_overrides(given: dict[str, Any]) -> dict[str, Any]:
    """The AwsSettings changes among ``given`` (command-line names), None meaning not given."""
    by_flag = {FLAG_NAMES.get(f.name, f.name): f.name for f in fields(AwsSettings)}
    changes = {by_flag[name]: value for name, value in given.items()
               if value is not None and by_flag.get(name) in OVERRIDABLE}
    return changes


def record_execution(rundir: RunDir, run: dict[str, Any], *, mode: Mode, started: datetime,
                     options: RunOptions, aws_changes: dict[str, Any],
                     job_changes: dict[str, Any]) -> dict[str, Any]:
    """Note this execution in ``run.json``: the options it overrode become the run's."""
    run = dict(run)
    if aws_changes:
        run["options"] = dict(run["options"]) | {"aws": asdict(options.aws)}
    if job_changes:
        run["job_options"] = dict(run.get("job_options", {})) | job_changes
    overrides = {flag(k): v for k, v in (aws_changes | job_changes).items()}
    if options.deadline:
        overrides["--deadline"] = options.deadline
    run["executions"] = [*run.get("executions", []),
                         {"mode": mode, "started_at": iso(started), "overrides": overrides}]
    write_json(rundir.run_json, run)
    return run


class Report:
    """``summary.json``, rewritten while the run goes and at its end.

    ``started_at`` is the run's first start; ``elapsed_s`` the time spent working over every
    execution (the time between a kill and a resume is not work), and ``calls_per_s`` the calls
    over that time.
    """

    def __init__(self, rundir: RunDir, run: dict[str, Any], journal: Journal,
                 started: datetime, *, quiet_progress: bool = False) -> None:
        self.rundir, self.run, self.journal, self.started = rundir, run, journal, started
        self.quiet_progress = quiet_progress  # a progress bar shows it already
        executions = run.get("executions") or [{"started_at": iso(started)}]
        self.first_started = executions[0]["started_at"]
        previous = rundir.read_summary(missing_ok=True)
        # What an earlier execution worked, as its last summary says (a killed one's last
        # periodic write is at most a second old).
        self.worked_before = float(previous.get("elapsed_s") or 0.0) if len(executions) > 1 \
            else 0.0
        self.warned = 0

    def counts(self) -> dict[str, int]:
        fixed = self.run["counts"]
        succeeded, failed = self.journal.counts.succeeded, self.journal.counts.failed
        return {
            "rows_total": fixed["rows_total"],
            "rows_rejected": fixed["rows_rejected"],
            "rows_duplicate": fixed["rows_duplicate"],
            "rows_blank": fixed.get("rows_blank", 0),
            "items_total": fixed["items_total"],
            "items_succeeded": succeeded,
            "items_failed": failed,
            "items_pending": fixed["items_total"] - succeeded - failed,
        }

    def write(self, state: str, calls: dict[str, dict[str, int]], *,
              finished: bool = False, note: str = "") -> dict[str, Any]:
        worked = round(self.worked_before + elapsed_since(self.started), 1)
        made = sum(c.get("made", 0) for c in calls.values())
        summary = {
            "run_id": self.rundir.run_id,
            "job": self.run["job"],
            "state": state,
            **self.counts(),
            "items_warned": self.warned,
            "calls": calls,
            "started_at": self.first_started,
            "finished_at": iso(utc_now()) if finished else None,
            "elapsed_s": worked,
            "calls_per_s": round(made / worked, 2) if worked else 0.0,
            "run_dir": str(self.rundir.path),
        }
        if note:
            summary["note"] = note
        write_json(self.rundir.summary_json, summary)
        return summary


def check_options(options: RunOptions) -> None:
    """What click cannot check alone, before anything is created or called."""
    from .durations import parse_deadline

    template = options.aws.role_arn_template
    if template and ("{account}" not in template or not template.startswith("arn:")):
        raise UsageError(f"--role-arn-template {template!r}: give a role ARN with {{account}}, "
                         "e.g. arn:aws:iam::{account}:role/ConnectBulk")
    if options.deadline:
        parse_deadline(options.deadline, utc_now())
    if options.aws.publish:
        from .publish import parse_target

        parse_target(options.aws.publish)


def ensure_valid(run: dict[str, Any], path: str) -> None:
    for key in ("job", "input", "options", "counts"):
        if key not in run:
            raise UsageError(f"{path}: damaged run record (no {key!r}); the run cannot continue")
