"""Notes: the small pieces of a job's own state that must survive a kill (an onboarding job it
started, a listing it made), kept in ``parts/notes.jsonl``.

Each ``put`` appends one JSON line and fsyncs before it returns, so a note written before a
kill is there for ``resume``; a torn last line (a kill mid-write) is ignored on reading.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import anyio

from .rundir import Appender


class Notes:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._values: dict[tuple[str, str], Any] = {}
        self._writing = anyio.Lock()
        if path is not None and path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                    self._values[(record["kind"], record["key"])] = record["value"]
                except (ValueError, KeyError, TypeError):
                    continue

    def get(self, kind: str, key: str) -> Any:
        return self._values.get((kind, key))

    async def put(self, kind: str, key: str, value: Any) -> None:
        await self.put_many(kind, {key: value})

    async def put_many(self, kind: str, values: dict[str, Any]) -> None:
        """Several notes of one kind, made durable together (one fsync) before it returns.
        The write and its fsync are a worker thread's: the event loop goes on with the calls
        in flight meanwhile."""
        self._values.update({(kind, key): value for key, value in values.items()})
        if self.path is None or not values:
            return
        lines = [json.dumps({"kind": kind, "key": key, "value": value}) + "\n"
                 for key, value in values.items()]
        # Shielded: a note is what keeps a resumed run from doing again what this one did
        # (an onboarding it started); a stop that cancels the calls in flight must not leave
        # it unwritten.
        with anyio.CancelScope(shield=True):
            async with self._writing:  # one writer at a time: lines never interleave
                await anyio.to_thread.run_sync(self._append, "".join(lines).encode())

    def _append(self, data: bytes) -> None:
        assert self.path is not None
        # A few notes a run: the file is not kept open between them.
        with contextlib.closing(Appender(self.path)) as notes:
            notes.append(data)
