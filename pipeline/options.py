"""The options of ``run`` and ``plan`` (and what ``resume`` and ``retry`` take again),
declared once: names, defaults, environment variables (``CONNECT_BULK_<NAME>``), and how they
become a ``RunOptions``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from .edge import is_tty

F = TypeVar("F", bound=Callable[..., Any])


def fraction(_ctx: Any, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise click.BadParameter("must be between 0 and 1", param=param)
    return value


def job_option(*decls: str, **kwargs: Any) -> click.Option:
    """A job's option, read from ``CONNECT_BULK_<NAME>`` too, as every run option is."""
    name = decls[0].split("/")[0].lstrip("-")
    return click.Option(list(decls), envvar=_env(name), show_envvar=False, **kwargs)


def _env(name: str) -> str:
    return f"CONNECT_BULK_{name.upper().replace('-', '_')}"


# What resume and retry take again (SPEC §2): access, pacing, and the execution's own.
OVERRIDES = ("profile", "region", "endpoint-url", "role-arn-template", "rate", "burst",
             "adaptive", "concurrency", "max-attempts", "call-timeout", "deadline", "log-format",
             "progress", "state-dir", "publish")


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
        option("--state-dir", default=None, type=click.Path(file_okay=False),
               help="Where the rates runs learn are kept for the next run against the same "
                    "quota. Default: ~/.cache/connect-bulk ($XDG_CACHE_HOME)."),
        option("--publish", default=None, metavar="s3://BUCKET/PREFIX",
               help="When the run ends, upload its final files (results, failures, rejects, "
                    "rollback, run.json, summary.json) to s3://BUCKET/PREFIX/RUN_ID/."),
        option("--concurrency", default=16, show_default=True, type=click.IntRange(1, 1000),
               help="Most calls in flight at once."),
        option("--max-attempts", default=8, show_default=True, type=click.IntRange(1, 100),
               help="Attempts per call before its items are recorded as failed."),
        option("--call-timeout", default=60.0, show_default=True,
               type=click.FloatRange(min=0.1),
               help="Seconds to wait for an answer before the attempt counts as failed "
                    "(and is retried)."),
        option("--max-failure-rate", default=None, type=float, callback=fraction,
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
        option("--shard", default=None, metavar="K/N",
               help="Take only shard K (from 0) of N: the input's (account, region) scopes "
                    "dealt to N runs by calls (RUN_ID-shard-K-of-N); connect-bulk merge joins "
                    "them. Default: from AWS_BATCH_JOB_ARRAY_INDEX or JOB_COMPLETION_INDEX "
                    "with CONNECT_BULK_SHARDS, else off."),
    ]
    return [o for o in declared if o is not None]


def with_options(options: list[click.Option]) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        command_params = getattr(func, "__click_params__", [])
        command_params.extend(reversed(options))
        func.__click_params__ = command_params  # type: ignore[attr-defined]
        return func

    return decorate


def build_options(params: dict[str, Any]) -> Any:
    from .aws import AwsSettings
    from .record import RunOptions

    log_format, progress = output(params.pop("log_format"), params.pop("progress"))
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
            state_dir=params.pop("state_dir"), publish=params.pop("publish"),
        ),
        max_failure_rate=params.pop("max_failure_rate"),
        deadline=params.pop("deadline"),
        log_format=log_format,
        progress=progress,
        yes=params.pop("yes"),
        shard=_shard(params.pop("shard")),
    )


def _shard(given: str | None) -> str | None:
    """``K/N`` as given or from the scheduler's environment, checked; None: not sharded."""
    from .shards import Shard, from_environment

    text = given or from_environment()
    return None if text is None else str(Shard.parse(text))


def output(log_format: str | None, progress: bool | None) -> tuple[str, bool]:
    fmt = log_format or ("text" if is_tty() else "json")
    return fmt, (is_tty() and fmt == "text") if progress is None else progress


def continue_params(params: dict[str, Any]) -> dict[str, Any]:
    """resume/retry: the overrides given (AwsSettings names), and the execution's options."""
    from .record import aws_overrides

    fmt, bar = output(params.pop("log_format"), params.pop("progress"))
    deadline = params.pop("deadline")
    given = {name.replace("-", "_"): params.pop(name.replace("-", "_"))
             for name in OVERRIDES if name.replace("-", "_") in params}
    return {"overrides": aws_overrides(given), "log_format": fmt, "progress": bar,
            "deadline": deadline}


