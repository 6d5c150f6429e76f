"""The edge: where connect-bulk's errors become one line and the exit code SPEC §5 gives
them, and nowhere else. No traceback reaches a terminal or a cron log, whatever was raised."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def is_tty() -> bool:
    return sys.stderr.isatty()


def say(message: str, code: int, log_format: str | None) -> int:
    """Print one error line (JSON with ``ts`` off a TTY), redacted; return ``code``."""
    from datetime import UTC, datetime

    from .redact import redact

    message = redact(" ".join(message.split()))  # one line, whatever the cause quoted
    if (log_format or ("text" if is_tty() else "json")) == "json":
        ts = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        click.echo(json.dumps({"ts": ts, "level": "error", "event": "error",
                               "message": message, "exit_code": code}), err=True)
    else:
        click.echo(f"connect-bulk: error: {message}", err=True)
    return code


def fail(message: str, code: int, log_format: str | None) -> None:
    sys.exit(say(message, code, log_format))


def edge(func: F) -> F:
    """Turn connect-bulk's errors into one line and the exit code SPEC §5 gives them."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SystemExit:
            raise
        except BaseException as exc:  # the edge: everything becomes one line
            fail(*said(exc), kwargs.get("log_format"))

    return wrapper  # type: ignore[return-value]


def said(exc: BaseException) -> tuple[str, int]:
    """The one line and the exit code for any error (the first of a task group's)."""
    from .errors import ConnectBulkError

    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, ConnectBulkError):
        return str(exc), exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return f"interrupted ({exc}) before anything was called", 130
    if isinstance(exc, OSError):
        # What no code path expected (a disk that went away, a full one before the run
        # directory existed): still one line, named.
        where = f" {exc.filename}" if exc.filename else ""
        return f"cannot read or write{where}: {exc.strerror or exc}", 2
    # a bug, or a broken install: still one line, never a traceback
    return f"internal error, please report it: {type(exc).__name__}: {exc}", 3
