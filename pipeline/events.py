"""The run's log: every event goes to ``events.jsonl`` (one JSON object a line) and to the
console, as text on a TTY and as the same JSON lines otherwise (cron, pipes)."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from .redact import redact
from .rundir import iso, utc_now

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class EventLog:
    def __init__(
        self, *, run_id: str, log_format: str, path: Path | None = None,
        stream: IO[str] | None = None, console: Any = None,
    ) -> None:
        self.run_id = run_id
        self.log_format = log_format
        self.stream = stream or sys.stderr
        self.console = console  # a rich Console while a progress bar is live
        self._file: IO[str] | None = None
        self._lock = threading.Lock()
        #: told when the log file cannot be written (disk full): the run must stop
        self.on_error: Callable[[OSError], None] | None = None
        if path is not None:
            self.attach(path)

    def attach(self, path: Path) -> None:
        self._file = path.open("a", encoding="utf-8")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def emit(self, event: str, *, level: str = "info", message: str = "", console: bool = True,
             **fields: Any) -> None:
        """Log ``event`` to the run's file; to the console too unless ``console=False`` or it
        is a debug event."""
        record = {"ts": iso(utc_now()), "level": level, "event": event, "run_id": self.run_id}
        if message:
            record["message"] = message
        record |= fields
        line = redact(json.dumps(record, default=str))
        with self._lock:
            if self._file is not None:
                try:
                    self._file.write(line + "\n")
                    self._file.flush()
                except OSError as exc:
                    self._file = None  # logged to the console from now on, not the file
                    if self.on_error is not None:
                        self.on_error(exc)
            if not console or LEVELS[level] < LEVELS["info"]:
                return  # debug events are for the file only
            if self.log_format == "json":
                print(line, file=self.stream, flush=True)
            else:
                text = redact(self._text(record))
                if self.console is not None:
                    self.console.print(text, markup=False, highlight=False)
                else:
                    print(text, file=self.stream, flush=True)

    @staticmethod
    def _text(record: dict[str, Any]) -> str:
        skip = {"ts", "level", "event", "run_id", "message"}
        details = " ".join(f"{k}={v}" for k, v in record.items() if k not in skip)
        clock = record["ts"][11:19]  # HH:MM:SS of the ISO timestamp, UTC
        level = "" if record["level"] == "info" else f"{record['level'].upper()}: "
        prefix = f"{clock} {level}"
        head = record.get("message") or record["event"]
        return f"{prefix}{head}" + (f"  ({details})" if details else "")


class _LibraryLog(logging.Handler):
    def __init__(self, events: EventLog) -> None:
        super().__init__(logging.WARNING)
        self.events = events
        self.said: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage().rstrip(".")
            exc = record.exc_info[1] if record.exc_info else None
            if exc is not None:
                message += f": {type(exc).__name__}: {exc}"
            if message in self.said:
                return
            self.said.add(message)
            level = "error" if record.levelno >= logging.ERROR else "warning"
            self.events.emit("library_warning", level=level, message=message,
                             logger=record.name)
        except Exception:  # a log line must never stop the run
            pass


@contextlib.contextmanager
def library_warnings(events: EventLog) -> Iterator[None]:
    """What the libraries log at WARNING and up while a run executes goes to its log as one
    ``library_warning`` event each, once per distinct message: the message and the exception's
    one line, never a traceback (aiobotocore logs "Refreshing temporary credentials failed"
    with the traceback of an expired SSO sign-in, which Python's last-resort handler printed
    to stderr)."""
    handler = _LibraryLog(events)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
