"""The ``connect-bulk`` command line.

Heavy libraries (moto, polars, aioboto3) are imported inside the commands that need them, so
that ``connect-bulk --help`` answers at once. Library errors (``ConnectBulkError``) become a
one-line message and their exit code here, at the edge, and nowhere else.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from . import __version__

LOOPBACK = ("127.0.0.1", "localhost", "::1")
F = TypeVar("F", bound=Callable[..., Any])


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="connect-bulk")
def cli() -> None:
    """Bulk Amazon Connect jobs: validated, rate-limited, checkpointed, resumable.

    \b
    connect-bulk run flow-associations numbers.csv --region us-east-1
    connect-bulk status data/runs/<run-id>
    """


def _fraction(_ctx: Any, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise click.BadParameter("must be between 0 and 1", param=param)
    return value


def _is_tty() -> bool:
    return sys.stderr.isatty()


def _fail(message: str, code: int, log_format: str | None) -> None:
    from datetime import UTC, datetime

    from .redact import redact

    message = redact(" ".join(message.split()))  # one line, whatever the cause quoted
    if (log_format or ("text" if _is_tty() else "json")) == "json":
        ts = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        click.echo(json.dumps({"ts": ts, "level": "error", "event": "error",
                               "message": message, "exit_code": code}), err=True)
    else:
        click.echo(f"connect-bulk: error: {message}", err=True)
    sys.exit(code)


def edge(func: F) -> F:
    """Turn connect-bulk's errors into one line and the exit code SPEC §5 gives them."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .errors import ConnectBulkError

        try:
            return func(*args, **kwargs)
        except ConnectBulkError as exc:
            _fail(str(exc), exc.exit_code, kwargs.get("log_format"))
        except KeyboardInterrupt as exc:
            _fail(f"interrupted ({exc}) before anything was called", 130,
                  kwargs.get("log_format"))
        except OSError as exc:
            # What no code path above expected (a disk that went away, a full one before the
            # run directory existed): still one line, named.
            where = f" {exc.filename}" if exc.filename else ""
            _fail(f"cannot read or write{where}: {exc.strerror or exc}", 2,
                  kwargs.get("log_format"))
        except Exception as exc:  # a bug: still one line, never a traceback
            _fail(f"internal error, please report it: {type(exc).__name__}: {exc}", 3,
                  kwargs.get("log_format"))

    return wrapper  # type: ignore[return-value]


def _env(name: str) -> str:
    return f"CONNECT_BULK_{name.upper().replace('-', '_')}"


# What resume and retry take again (SPEC §2): access, pacing, and the execution's own.
OVERRIDES = ("profile", "region", "endpoint-url", "role-arn-template", "rate", "burst",
             "adaptive", "concurrency", "max-attempts", "call-timeout", "deadline", "log-format",
             "progress")


def run_options(*, overrides: bool = False) -> list[click.Option]:
    """The options of ``run`` and ``plan``, declared once (SPEC §2); each reads
    ``CONNECT_BULK_<NAME>`` too. ``overrides``: the subset ``resume`` and ``retry`` take, with
    no defaults (not given: the run's own)."""

    def option(*decls: str, **kwargs: Any) -> click.Option | None:
        name = decls[0].split("/")[0].lstrip("-")
        if overrides:
            if name not in OVERRIDES:
                return None
            kwargs |= {"default": None, "show_default": False}
            kwargs["help"] = kwargs.get("help", "") + " Default: the run's own."
        return click.Option(list(decls), envvar=_env(name), show_envvar=False, **kwargs)

    declared = [
        option("--out", default="data/runs", show_default=True, type=click.Path(file_okay=False),
               help="Output root; the run directory is OUT/RUN_ID."),
        option("--run-id", default=None,
               help="Run name; {date} and {job} expand. Default: {job}-<UTC timestamp>."),
        option("--region", default=None, help="AWS region for bare instance IDs."),
        option("--profile", default=None, help="AWS named profile."),
        option("--endpoint-url", default=None,
               help="Send every AWS call there (the sandbox, or a VPC endpoint)."),
        option("--role-arn-template", default=None,
               help="Role to assume for instances in other accounts; {account} is filled in."),
        option("--rate", default=2.0, show_default=True, type=click.FloatRange(min=0.01),
               help="Ceiling of calls per second, per operation, account and region."),
        option("--burst", default=5.0, show_default=True, type=click.FloatRange(min=1),
               help="Bucket size of that limiter."),
        option("--adaptive/--no-adaptive", default=True, show_default=True,
               help="Lower the rate on throttling and recover towards --rate."),
        option("--concurrency", default=16, show_default=True, type=click.IntRange(1, 1000),
               help="Most calls in flight at once."),
        option("--max-attempts", default=8, show_default=True, type=click.IntRange(1, 100),
               help="Attempts per call before its items are recorded as failed."),
        option("--call-timeout", default=60.0, show_default=True,
               type=click.FloatRange(min=0.1),
               help="Seconds to wait for an answer before the attempt counts as failed "
                    "(and is retried)."),
        option("--max-failure-rate", default=None, type=float, callback=_fraction,
               help="Abort (exit 3) once more than this share of finished items failed "
                    "(after at least 200 items)."),
        option("--deadline", default=None,
               help="Stop starting calls after a duration (45m) or at a UTC time (05:30)."),
        option("--log-format", type=click.Choice(["text", "json"]), default=None,
               help="Log lines as text or JSON. Default: text on a TTY, json otherwise."),
        option("--progress/--no-progress", default=None,
               help="Live progress bar. Default: on a TTY only."),
        option("--yes", is_flag=True, default=False,
               help="Skip the confirmation a mutating job asks for on a TTY."),
    ]
    return [o for o in declared if o is not None]


def with_options(options: list[click.Option]) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        command_params = getattr(func, "__click_params__", [])
        command_params.extend(reversed(options))
        func.__click_params__ = command_params  # type: ignore[attr-defined]
        return func

    return decorate


def _build_options(params: dict[str, Any]) -> Any:
    from .aws import AwsSettings
    from .record import RunOptions

    log_format, progress = _output(params.pop("log_format"), params.pop("progress"))
    return RunOptions(
        out=params.pop("out"),
        run_id=params.pop("run_id"),
        aws=AwsSettings(
            region=params.pop("region"), profile=params.pop("profile"),
            endpoint_url=params.pop("endpoint_url"), rate=params.pop("rate"),
            burst=params.pop("burst"), adaptive=params.pop("adaptive"),
            concurrency=params.pop("concurrency"), max_attempts=params.pop("max_attempts"),
            read_timeout_s=params.pop("call_timeout"),
            role_arn_template=params.pop("role_arn_template"),
        ),
        max_failure_rate=params.pop("max_failure_rate"),
        deadline=params.pop("deadline"),
        log_format=log_format,
        progress=progress,
        yes=params.pop("yes"),
    )


class JobGroup(click.Group):
    """``run JOB INPUT`` and ``plan JOB INPUT``: one subcommand per module in ``jobs/``."""

    def __init__(self, *args: Any, action: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.action = action

    def list_commands(self, ctx: click.Context) -> list[str]:
        from .job import job_names

        return job_names()

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        from .job import job_names, load_job_class

        if name not in job_names():
            return None
        job = load_job_class(name)
        params: list[click.Parameter] = [
            click.Argument(["input_path"], metavar="INPUT",
                           type=click.Path(dir_okay=False, path_type=Path)),
            *run_options(),
            *job.cli_options(),
        ]
        if self.action == "plan":
            params.append(click.Option(["--json", "as_json"], is_flag=True,
                                       help="Print the plan as JSON."))
        callback = _run_callback(name) if self.action == "run" else _plan_callback(name)
        return click.Command(name, params=params, callback=callback, help=job.summary,
                             short_help=job.summary)


def _run_callback(job_name: str) -> Callable[..., None]:
    @edge
    def callback(**params: Any) -> None:
        from .runs import start

        input_path = params.pop("input_path")
        options = _build_options(params)
        # Ask only a person at a terminal; cron gets a refusal unless --yes.
        interactive = sys.stdin.isatty() and sys.stderr.isatty()
        confirm = (lambda text: click.confirm(text, err=True)) if interactive else None
        code = start(job_name, input_path, params, options, confirm=confirm)
        sys.exit(code)

    return callback


def _plan_callback(job_name: str) -> Callable[..., None]:
    @edge
    def callback(**params: Any) -> None:
        from .job import load_job_class
        from .record import check_options
        from .render import plan_lines
        from .runs import plan_report

        input_path = params.pop("input_path")
        as_json = params.pop("as_json")
        options = _build_options(params)
        check_options(options)
        report = plan_report(load_job_class(job_name)(**params), input_path, options)
        if as_json:
            click.echo(json.dumps(report, indent=2))
            return
        click.echo("\n".join(plan_lines(report, options.aws.rate)))

    return callback


cli.add_command(JobGroup("run", action="run", help="Start a run of JOB over INPUT, or continue "
                         "the run of the same job and input in --run-id."))
cli.add_command(JobGroup("plan", action="plan", help="Validate and plan only: no AWS call."))


def _output(log_format: str | None, progress: bool | None) -> tuple[str, bool]:
    fmt = log_format or ("text" if _is_tty() else "json")
    return fmt, (_is_tty() and fmt == "text") if progress is None else progress


def _continue_params(params: dict[str, Any]) -> dict[str, Any]:
    """resume/retry: the overrides given (AwsSettings names), and the execution's options."""
    from .record import aws_overrides

    fmt, bar = _output(params.pop("log_format"), params.pop("progress"))
    deadline = params.pop("deadline")
    given = {name.replace("-", "_"): params.pop(name.replace("-", "_"))
             for name in OVERRIDES if name.replace("-", "_") in params}
    return {"overrides": aws_overrides(given), "log_format": fmt, "progress": bar,
            "deadline": deadline}


RUN_DIR = click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))


@cli.command()
@RUN_DIR
@with_options(run_options(overrides=True))
@edge
def resume(*, run_dir: Path, **params: Any) -> None:
    """Continue an interrupted run with the options it was started with (but its deadline).
    Access and pacing options given again replace the run's, and are recorded in run.json."""
    from .runs import resume as resume_run

    sys.exit(resume_run(run_dir, **_continue_params(params)))


def _redrive_options() -> list[click.Option]:
    """The job options that only widen what a redrive may do, of every job (each run takes
    only its own job's)."""
    from .job import job_names, load_job_class

    found: dict[str, click.Option] = {}
    for name in job_names():
        job = load_job_class(name)
        for option in job.cli_options():
            if option.name in job.redrive_options:
                found.setdefault(option.name or "", option)
    return list(found.values())


class RetryCommand(click.Command):
    """``retry``: its job options are the jobs', found when it is asked for."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        if not getattr(self, "_with_jobs", False):
            self.params.extend(_redrive_options())
            self._with_jobs = True
        return super().get_params(ctx)


@cli.command(cls=RetryCommand)
@RUN_DIR
@click.option("--all", "everything", is_flag=True,
              help="Every failed item, not only the retryable ones.")
@with_options(run_options(overrides=True))
@edge
def retry(*, run_dir: Path, everything: bool, **params: Any) -> None:
    """Redrive the items whose final state is a retryable failure."""
    from .runs import retry as retry_run

    execution = _continue_params(params)
    job_overrides = {name: value for name, value in params.items() if value}
    sys.exit(retry_run(run_dir, everything=everything, job_overrides=job_overrides,
                       **execution))


@cli.command()
@RUN_DIR
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@edge
def status(*, run_dir: Path, as_json: bool) -> None:
    """State, counts, rates and timings of a run."""
    from .render import continue_command, status_lines
    from .runs import status as run_status

    summary = run_status(run_dir)
    if as_json:
        command = continue_command(summary)
        click.echo(json.dumps(summary | ({"continue_with": command} if command else {}),
                              indent=2))
        return
    click.echo("\n".join(status_lines(summary)))


@cli.command()
@click.argument("run_a", type=click.Path(file_okay=False, path_type=Path))
@click.argument("run_b", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Where to write the changes (default RUN_B/diff.parquet).")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@edge
def diff(*, run_a: Path, run_b: Path, out_path: Path | None, as_json: bool) -> None:
    """What changed from flow-associations run A to run B: associations added, removed, and
    re-pointed (changed), on the numbers both runs have a result for. Exit 1 when either run
    did not finish."""
    from jobs.flow_associations import diff_report

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


@cli.command()
@RUN_DIR
@click.argument("what", required=False,
                type=click.Choice(["results", "failures", "rejects", "rollback"]))
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default=None,
              help="Default: a table on a TTY, CSV otherwise.")
@click.option("--limit", type=click.IntRange(min=0), default=None,
              help="Show at most N rows (a table shows 50 unless told).")
@edge
def show(*, run_dir: Path, what: str | None, fmt: str | None, limit: int | None) -> None:
    """Print a run's results, failures, rejects or rollback for people and spreadsheets.
    Without WHAT: the failures when there are any, else the results."""
    from .show import show_run

    fmt = fmt or ("table" if sys.stdout.isatty() else "csv")
    show_run(run_dir, what, fmt=fmt, limit=limit, echo=click.echo)


@cli.command("jobs")
def list_jobs() -> None:
    """List the jobs with their input columns and options."""
    from .job import job_names, load_job_class

    for name in job_names():
        job = load_job_class(name)
        click.echo(f"{name}: {job.summary}")
        for column in job.columns:
            aliases = f" (aliases: {', '.join(column.aliases)})" if column.aliases else ""
            need = "required" if column.required else "optional"
            click.echo(f"  column {column.name}, {need}{aliases}: {column.help}")
        for option in job.cli_options():
            click.echo(f"  option {' / '.join(option.opts + option.secondary_opts)}: "
                       f"{option.help}")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but loopback exposes the sandbox to the network.")
@click.option("--port", default=5050, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on; 0 picks a free one.")
@click.option("--latency-ms", default=0.0, type=click.FloatRange(min=0), help="Added latency.")
@click.option("--jitter-ms", default=0.0, type=click.FloatRange(min=0),
              help="Random extra latency, up to this.")
@click.option("--error-rate", default=0.0, callback=_fraction,
              help="Share of calls answered with the operation's HTTP 500 error.")
@click.option("--drop-rate", default=0.0, callback=_fraction,
              help="Share of calls whose connection is closed without an answer.")
@click.option("--quota", "quotas", multiple=True, metavar="OPERATION=RATE[/BURST]",
              help="Calls per second per operation, account and region, beyond which the call "
                   "gets HTTP 429 ThrottlingException; '*' for every operation. Repeatable.")
@click.option("--onboarding-seconds", default=2.0, show_default=True,
              type=click.FloatRange(min=0), help="How long an onboarding job stays IN_PROGRESS.")
@click.option("--seed-instances", default=0, type=click.IntRange(0, 1000),
              help="Seed this many instances at start (0: an empty world).")
@click.option("--seed-numbers-per-instance", default=100, show_default=True,
              type=click.IntRange(0, 1_000_000))
@click.option("--seed-flows-per-instance", default=3, show_default=True, type=click.IntRange(0))
@click.option("--seed-associated-fraction", default=0.8, show_default=True, callback=_fraction)
@click.option("--seed-region", default="us-east-1", show_default=True)
@click.option("--seed-random", "seed_random", default=0, show_default=True,
              help="Random seed of the seeded world (same seed, same world).")
def sandbox(
    *,
    host: str,
    port: int,
    latency_ms: float,
    jitter_ms: float,
    error_rate: float,
    drop_rate: float,
    quotas: tuple[str, ...],
    onboarding_seconds: float,
    seed_instances: int,
    seed_numbers_per_instance: int,
    seed_flows_per_instance: int,
    seed_associated_fraction: float,
    seed_region: str,
    seed_random: int,
) -> None:
    """Serve the local Amazon Connect sandbox until stopped (Ctrl-C or SIGTERM).

    Point any AWS client at it with --endpoint-url and dummy credentials. Control it at
    /_sandbox/faults, /_sandbox/stats, /_sandbox/reset and /_sandbox/seed.
    """
    from .sandbox import Faults, Quota, SandboxServer, SeedRequest
    from .sandbox.seed import seed_world

    try:
        faults = Faults(
            latency_ms=latency_ms,
            jitter_ms=jitter_ms,
            error_rate=error_rate,
            drop_rate=drop_rate,
            quotas=dict(Quota.parse(text) for text in quotas),
        )
        seed = SeedRequest(
            region=seed_region,
            instances=seed_instances,
            numbers_per_instance=seed_numbers_per_instance,
            flows_per_instance=seed_flows_per_instance,
            associated_fraction=seed_associated_fraction,
            seed=seed_random,
        ) if seed_instances else None
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    if host not in LOOPBACK:
        click.echo(f"warning: binding {host}: the sandbox is reachable from the network", err=True)

    server = SandboxServer(host=host, port=port, faults=faults,
                           onboarding_seconds=onboarding_seconds)
    try:
        server.start()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise click.ClickException(f"cannot listen on {host}:{port}: {reason}") from exc
    if seed is not None:
        made = seed_world(seed)
        click.echo(
            f"seeded {len(made['instances'])} instances, {made['numbers']} numbers "
            f"({made['associated']} associated) in {seed.region} in {made['seconds']}s",
            err=True,
        )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    click.echo(f"ready {server.url}")
    sys.stdout.flush()
    while not stop.wait(3600):
        pass
    server.stop()
    click.echo("sandbox stopped", err=True)


@cli.command()
@click.option("--rows", default=3000, show_default=True, type=click.IntRange(3, 200_000),
              help="Phone numbers in the demo world.")
@click.option("--out", default="data/runs", show_default=True, type=click.Path(file_okay=False))
@with_options([o for o in run_options(overrides=True) if o.name in ("log_format", "progress")])
@edge
def demo(*, rows: int, out: str, log_format: str | None, progress: bool | None) -> None:
    """Start a sandbox in-process, seed it, write sample inputs, run the jobs against it, and
    print where the outputs are."""
    from .sandbox.demo import run_demo

    fmt, bar = _output(log_format, progress)
    code = run_demo(rows=rows, out=out, progress=bar, log_format=fmt,
                    echo=lambda text: click.echo(text, err=True))
    # The demo's failures and rejects are on purpose: it succeeded if the run finished.
    sys.exit(0 if code in (0, 1) else code)


def main() -> None:
    from . import signals

    signals.install()
    cli(prog_name="connect-bulk")
