"""The run directory: its paths, atomic writes, ``run.json``, ``summary.json`` and the lock.

::

    <out>/<run_id>/
      run.json  summary.json  results.parquet  failures.parquet  rejects.parquet
      events.jsonl  lock
      parts/  items.parquet  checkpoint.json  results-NNNNNN.parquet  failures-NNNNNN.parquet
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import DamagedRun, RunLocked, UsageError


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """Write to the path this yields, beside ``path``; on leaving, fsync and rename it over
    ``path``. An error leaves nothing half-written, and a disk failure quoted by a library
    (Polars) is raised as the ``OSError`` it is."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
    except Exception as exc:
        tmp.unlink(missing_ok=True)  # a full disk keeps no half-written file
        raise _as_os_error(exc, tmp) from exc
    os.chmod(tmp, 0o600)  # the owner's only, wherever it lands: runs hold account IDs and ARNs
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class Appender:
    """A file lines are appended to and made durable (the journal's log, the notes), the
    owner's only like every file of a run. It stays open from one append to the next: an open
    and a close each time would cost five system calls more, each a hand-off of the GIL between
    the writing thread and the event loop's. Close it before the file is renamed, and once
    nothing more is written to it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def append(self, data: bytes) -> None:
        """Append ``data`` and fsync it (raises ``OSError``)."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        os.fsync(self._fd)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with suppress(OSError):
                os.close(fd)


def _as_os_error(exc: Exception, path: Path) -> Exception:
    """Polars reports an IO failure as a ComputeError quoting the OS error: make it the
    ``OSError`` it is, so that a full disk is a full disk wherever it strikes."""
    if isinstance(exc, OSError):
        return exc
    match = re.search(r"\(os error (\d+)\)", str(exc))
    if match is None:
        return exc
    number = int(match.group(1))
    return OSError(number, os.strerror(number), str(path))


def write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2, default=str) + "\n"
    with atomic_write(path) as tmp:
        tmp.write_text(text)


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

    def claim(self) -> bool:
        """Make the directory (if need be) and take its lock, before anything is decided about
        it; ``True`` when this process made it (and may remove it if the run is refused)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.path.mkdir(mode=0o700)
                created = True
            except FileExistsError:
                if not self.path.is_dir():
                    raise UsageError(f"{self.path} exists and is not a directory") from None
                created = False
        except OSError as exc:
            raise UsageError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        self.lock()
        return created

    def create(self) -> None:
        # User-only: the run holds account IDs and ARNs.
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.parts.mkdir(exist_ok=True, mode=0o700)
        os.chmod(self.path, 0o700)

    def discard(self) -> None:
        """Remove a run directory this process made for a run that was then refused."""
        self.unlock()
        shutil.rmtree(self.path, ignore_errors=True)

    def read_run(self) -> dict[str, Any]:
        if not self.exists():
            raise UsageError(f"{self.path}: not a connect-bulk run directory (no run.json)")
        return self.read_json(self.run_json)

    def read_summary(self, *, missing_ok: bool = True) -> dict[str, Any]:
        if not self.summary_json.is_file() and missing_ok:
            return {}
        return self.read_json(self.summary_json)

    @staticmethod
    def read_json(path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise UsageError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
        except ValueError as exc:
            raise DamagedRun(path, f"not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise DamagedRun(path, "not a JSON object")
        return data

    def lock(self) -> None:
        """Hold the run's lock until the process ends; a dead holder's lock is free (flock)."""
        try:
            fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise UsageError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunLocked(f"{self.path} is in use by {holder}") from None
        if not self._still_there(fd):
            # A refused run removed the directory between our open and our lock.
            os.close(fd)
            raise RunLocked(f"{self.path} was removed by another process; try again")
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._lock_fd = fd

    def _still_there(self, fd: int) -> bool:
        try:
            return os.stat(self.path / "lock").st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def is_locked(self) -> bool:
        """Whether a live process holds the lock; read-only, so it works on a read-only mount."""
        try:
            fd = os.open(self.path / "lock", os.O_RDONLY)
        except FileNotFoundError:
            return False
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM):
                return False
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

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
