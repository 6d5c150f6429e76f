"""The ``connect-bulk`` command line: the commands every job shares. A job brings its own
(``diff``, ``rollback``) through ``Job.commands``; this module names no job.

Heavy libraries (moto, polars, aioboto3) are imported inside the commands that need them, so
that ``connect-bulk --help`` answers at once. Errors become one line at the edge (``edge``).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from . import __version__
from .edge import edge, said, say
from .options import build_options, continue_params, run_options, with_options
from .sandbox.commands import demo, sandbox


class Commands(click.Group):
    """The shared commands, and each job's own, found when asked for."""

    _from_jobs: dict[str, click.Command] | None = None

    def job_commands(self) -> dict[str, click.Command]:
        if self._from_jobs is None:
            from .job import job_names, load_job_class

            self._from_jobs = {command.name or "": command for name in job_names()
                               for command in load_job_class(name).commands()}
        return self._from_jobs

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.job_commands()))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return super().get_command(ctx, name) or self.job_commands().get(name)


@click.group(cls=Commands,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="connect-bulk")
def cli() -> None:
    """Bulk Amazon Connect jobs: validated, rate-limited, checkpointed, resumable.

    \b
    connect-bulk jobs
    connect-bulk run JOB numbers.csv --region us-east-1
    connect-bulk status data/runs/<run-id>
    """


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
            params.append(click.Option(["--shards", "shards"], type=click.IntRange(1, 10_000),
                                       default=None, metavar="N",
                                       help="Show how the input's (account, region) scopes "
                                            "are dealt to N shards (--shard K/N)."))
        callback = _run_callback(name) if self.action == "run" else _plan_callback(name)
        return click.Command(name, params=params, callback=callback, help=job.summary,
                             short_help=job.summary)


def _run_callback(job_name: str) -> Callable[..., None]:
    @edge
    def callback(**params: Any) -> None:
        from .runs import start

        input_path = params.pop("input_path")
        options = build_options(params)
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
        shards = params.pop("shards")
        options = build_options(params)
        check_options(options)
        report = plan_report(load_job_class(job_name)(**params), input_path, options,
                             shards=shards)
        if as_json:
            click.echo(json.dumps(report, indent=2))
            return
        click.echo("\n".join(plan_lines(report, options.aws.rate)))

    return callback


cli.add_command(JobGroup("run", action="run", help="Start a run of JOB over INPUT, or continue "
                         "the run of the same job and input in --run-id."))
cli.add_command(JobGroup("plan", action="plan", help="Validate and plan only: no AWS call."))


RUN_DIR = click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))


@cli.command()
@RUN_DIR
@with_options(run_options(overrides=True))
@edge
def resume(*, run_dir: Path, **params: Any) -> None:
    """Continue an interrupted run with the options it was started with (but its deadline).
    Access and pacing options given again replace the run's, and are recorded in run.json."""
    from .runs import resume as resume_run

    sys.exit(resume_run(run_dir, **continue_params(params)))


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

    execution = continue_params(params)
    job_overrides = {name: value for name, value in params.items() if value}
    sys.exit(retry_run(run_dir, everything=everything, job_overrides=job_overrides,
                       **execution))


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True,
                type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The merged run directory (new, or empty).")
@click.option("--json", "as_json", is_flag=True, help="Print the merged summary as JSON.")
@edge
def merge(*, run_dirs: tuple[Path, ...], out: Path, as_json: bool) -> None:
    """Join the shards of one input (runs started with --shard K/N, every K once, each
    finished) into one run directory, read by status, show and diff as one run."""
    from .merge import merge as merge_runs

    summary = merge_runs(list(run_dirs), out)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"merged {len(run_dirs)} shards into {out}: {summary['items_succeeded']} "
               f"succeeded, {summary['items_failed']} failed, {summary['rows_rejected']} "
               f"rejected ({summary['state']})")


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
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@edge
def notebooks(*, folder: Path) -> None:
    """Copy the analysis notebooks into FOLDER (they come with the install) and say how to
    open them."""
    from importlib.resources import files

    copied = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for entry in sorted(files("connect_bulk.notebooks").iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".ipynb"):
                (folder / entry.name).write_bytes(entry.read_bytes())
                copied.append(entry.name)
    except OSError as exc:
        from .errors import UsageError

        raise UsageError(f"cannot write {folder}: {exc.strerror or exc}") from exc
    click.echo(f"copied {len(copied)} notebooks to {folder}: {', '.join(copied)}")
    click.echo(f"open them: pip install 'connect-bulk[notebooks]' && jupyter lab {folder}")
    click.echo("each reads the newest run of its job under data/runs, or the run named by "
               "CONNECT_BULK_RUN_DIR=<run dir> (relative to where you start Jupyter)")


cli.add_command(sandbox)
cli.add_command(demo)


def entry(args: list[str] | None = None) -> int:
    """The command line on ``args``; its exit code. Every error is one line: a command's own
    at its edge, and here whatever no edge saw (option parsing, a job that cannot load)."""
    root = logging.getLogger()
    if not root.handlers:
        # Without a handler, Python prints what a library logs at WARNING and up, with any
        # traceback attached, to stderr; a run's log takes them while it executes.
        root.addHandler(logging.NullHandler())
    try:
        code = cli.main(args, prog_name="connect-bulk", standalone_mode=False)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except click.exceptions.Abort:
        return say("interrupted before anything was called", 130, None)
    except click.ClickException as exc:
        # A usage error is one line too, naming the option; `--help` says the rest.
        return say(exc.format_message(), exc.exit_code, None)
    except BaseException as exc:  # the outermost edge
        return say(*said(exc), None)
    return code if isinstance(code, int) else 0


def main() -> None:
    from . import signals

    signals.install()
    sys.exit(entry())
