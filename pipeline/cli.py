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
    if (log_format or ("text" if _is_tty() else "json")) == "json":
        click.echo(json.dumps({"level": "error", "event": "error", "message": message,
                               "exit_code": code}), err=True)
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
        except KeyboardInterrupt:
            _fail("interrupted", 130, kwargs.get("log_format"))

    return wrapper  # type: ignore[return-value]


def _env(name: str) -> str:
    return f"CONNECT_BULK_{name.upper().replace('-', '_')}"


def run_options() -> list[click.Option]:
    """The options of ``run`` and ``plan``, declared once (SPEC §2); each reads
    ``CONNECT_BULK_<NAME>`` too."""

    def option(*decls: str, **kwargs: Any) -> click.Option:
        name = decls[0].split("/")[0].lstrip("-")
        return click.Option(list(decls), envvar=_env(name), show_envvar=False, **kwargs)

    return [
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


def _build_options(params: dict[str, Any]) -> Any:
    from .aws import AwsSettings
    from .runs import RunOptions

    log_format = params.pop("log_format") or ("text" if _is_tty() else "json")
    progress = params.pop("progress")
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
        progress=_is_tty() and log_format == "text" if progress is None else progress,
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
        from .runs import plan_report

        input_path = params.pop("input_path")
        as_json = params.pop("as_json")
        options = _build_options(params)
        report = plan_report(load_job_class(job_name)(**params), input_path, options)
        if as_json:
            click.echo(json.dumps(report, indent=2))
            return
        click.echo(f"{report['job']} plan for {report['input']}")
        click.echo(f"  rows {report['rows_total']}: {report['items_total']} items, "
                   f"{report['rows_duplicate']} duplicates, {report['rows_rejected']} rejected")
        click.echo(f"  instances {report['instances']}")
        for operation, calls in report["calls"].items():
            click.echo(f"  calls {operation}: {calls}")
        for scope in report["scopes"]:
            account = scope["account_id"] or "caller account"
            where = f"{account} {scope['region'] or 'default region'}"
            click.echo(f"    {where}: {scope['items']} items in {scope['batches']} batches")
        click.echo(f"  estimated {report['estimated_s']}s at --rate {options.aws.rate}")
        for reject in report["rejects"]:
            click.echo(f"  reject row {reject['input_row']}: {reject['reason']}")

    return callback


cli.add_command(JobGroup("run", action="run", help="Start a run of JOB over INPUT, or continue "
                         "the run of the same job and input in --run-id."))
cli.add_command(JobGroup("plan", action="plan", help="Validate and plan only: no AWS call."))


DEADLINE = click.option(
    "--deadline", default=None, envvar="CONNECT_BULK_DEADLINE",
    help="Stop starting calls after a duration (45m) or at a UTC time (05:30).",
)
_output_options = [
    click.option("--log-format", type=click.Choice(["text", "json"]), default=None,
                 envvar="CONNECT_BULK_LOG_FORMAT",
                 help="Log lines as text or JSON. Default: text on a TTY, json otherwise."),
    click.option("--progress/--no-progress", default=None, envvar="CONNECT_BULK_PROGRESS",
                 help="Live progress bar. Default: on a TTY only."),
]


def output_options(func: F) -> F:
    for decorator in reversed(_output_options):
        func = decorator(func)
    return func


def _output(log_format: str | None, progress: bool | None) -> tuple[str, bool]:
    fmt = log_format or ("text" if _is_tty() else "json")
    return fmt, (_is_tty() and fmt == "text") if progress is None else progress


RUN_DIR = click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))


@cli.command()
@RUN_DIR
@output_options
@DEADLINE
@edge
def resume(*, run_dir: Path, log_format: str | None, progress: bool | None,
           deadline: str | None) -> None:
    """Continue an interrupted run with the options it was started with (but its deadline)."""
    from .runs import resume as resume_run

    fmt, bar = _output(log_format, progress)
    sys.exit(resume_run(run_dir, log_format=fmt, progress=bar, deadline=deadline))


@cli.command()
@RUN_DIR
@click.option("--all", "everything", is_flag=True,
              help="Every failed item, not only the retryable ones.")
@output_options
@DEADLINE
@edge
def retry(*, run_dir: Path, everything: bool, log_format: str | None,
          progress: bool | None, deadline: str | None) -> None:
    """Redrive the items whose final state is a retryable failure."""
    from .runs import retry as retry_run

    fmt, bar = _output(log_format, progress)
    sys.exit(retry_run(run_dir, everything=everything, log_format=fmt, progress=bar,
                       deadline=deadline))


@cli.command()
@RUN_DIR
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@edge
def status(*, run_dir: Path, as_json: bool) -> None:
    """State, counts, rates and timings of a run."""
    from .runs import status as run_status

    summary = run_status(run_dir)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"{summary.get('run_id')}  {summary.get('job')}  {summary.get('state')}")
    click.echo(f"  input    {summary['input']['path']} ({summary['input']['rows']} rows)")
    click.echo(
        f"  items    {summary.get('items_total')} total: {summary.get('items_succeeded')} "
        f"succeeded, {summary.get('items_failed')} failed, {summary.get('items_pending')} pending"
    )
    click.echo(f"  rows     {summary.get('rows_rejected')} rejected, "
               f"{summary.get('rows_duplicate')} duplicate")
    for operation, calls in (summary.get("calls") or {}).items():
        click.echo(f"  calls    {operation}: {calls['made']} made, {calls['throttled']} "
                   f"throttled, {calls['retried']} retried, {calls['errors']} errors")
    click.echo(f"  timing   started {summary.get('started_at')}, finished "
               f"{summary.get('finished_at') or '-'}, {summary.get('elapsed_s')}s, "
               f"{summary.get('calls_per_s')} calls/s")
    if summary.get("note"):
        click.echo(f"  note     {summary['note']}")


@cli.command()
@click.argument("run_a", type=click.Path(file_okay=False, path_type=Path))
@click.argument("run_b", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Where to write the changes (default RUN_B/diff.parquet).")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@edge
def diff(*, run_a: Path, run_b: Path, out_path: Path | None, as_json: bool) -> None:
    """What changed from flow-associations run A to run B: associations added, removed, and
    re-pointed (changed)."""
    import polars as pl

    from jobs.flow_associations import diff_runs

    from .errors import UsageError
    from .rundir import RunDir, write_atomic

    frames = []
    for path in (run_a, run_b):
        rundir = RunDir(path)
        if rundir.read_run()["job"] != "flow-associations":
            raise UsageError(f"{path}: diff compares flow-associations runs")
        if not rundir.results.is_file():
            raise UsageError(f"{path}: no results.parquet yet (resume the run first)")
        frames.append(pl.read_parquet(rundir.results))
    changes = diff_runs(*frames)
    target = out_path or run_b / "diff.parquet"
    write_atomic(target, lambda tmp: changes.write_parquet(tmp))
    counts = {change: int((changes["change"] == change).sum())
              for change in ("added", "removed", "changed")}
    if as_json:
        click.echo(json.dumps(counts | {"total": changes.height, "out": str(target)}))
        return
    click.echo(f"{counts['added']} added, {counts['removed']} removed, {counts['changed']} "
               f"changed; written to {target}")


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
@output_options
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
    cli(prog_name="connect-bulk")
