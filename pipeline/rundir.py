"""The run directory: its paths, atomic writes, ``run.json``, ``summary.json`` and the lock.

::

    <out>/<run_id>/
      run.json  summary.json  results.parquet  failures.parquet  rejects.parquet
      events.jsonl  lock
      parts/  items.parquet  checkpoint.json  results-NNNNNN.parquet  failures-NNNNNN.parquet
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import RunLocked, UsageError


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write through ``write(tmp)`` beside ``path``, fsync, then rename over it."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write(tmp)
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2, default=str) + "\n"
    write_atomic(path, lambda tmp: void(tmp.write_text(text)))


def void(_: object) -> None:
    """Drop a return value (a ``write`` callback returns nothing)."""


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.parts = path / "parts"
        self._lock_fd: int | None = None

    run_json = property(lambda self: self.path / "run.json")
    summary_json = property(lambda self: self.path / "summary.json")
    results = property(lambda self: self.path / "results.parquet")
    failures = property(lambda self: self.path / "failures.parquet")
    rejects = property(lambda self: self.path / "rejects.parquet")
    events = property(lambda self: self.path / "events.jsonl")
    items = property(lambda self: self.parts / "items.parquet")
    checkpoint = property(lambda self: self.parts / "checkpoint.json")

    @property
    def run_id(self) -> str:
        return self.path.name

    def exists(self) -> bool:
        return bool(self.run_json.is_file())

    def create(self) -> None:
        # User-only: the run holds account IDs and ARNs.
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.parts.mkdir(exist_ok=True, mode=0o700)
        os.chmod(self.path, 0o700)

    def read_run(self) -> dict[str, Any]:
        if not self.exists():
            raise UsageError(f"{self.path}: not a connect-bulk run directory (no run.json)")
        data: dict[str, Any] = json.loads(self.run_json.read_text())
        return data

    def read_summary(self) -> dict[str, Any]:
        if not self.summary_json.is_file():
            return {}
        data: dict[str, Any] = json.loads(self.summary_json.read_text())
        return data

    def lock(self) -> None:
        """Hold the run's lock until the process ends; a dead holder's lock is free (flock)."""
        fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunLocked(f"{self.path} is in use by {holder}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def clean_temporaries(self) -> None:
        """Files a crash left half-written (never renamed into place)."""
        for folder in (self.path, self.parts):
            for tmp in folder.glob(".*.tmp-*"):
                tmp.unlink(missing_ok=True)
