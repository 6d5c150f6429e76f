"""Notes: the small pieces of a job's own state that must survive a kill (an onboarding job it
started, a listing it made), kept in ``parts/notes.jsonl``.

Each ``put`` appends one JSON line and fsyncs before it returns, so a note written before a
kill is there for ``resume``; a torn last line (a kill mid-write) is ignored on reading.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class Notes:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._values: dict[tuple[str, str], Any] = {}
        if path is not None and path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                    self._values[(record["kind"], record["key"])] = record["value"]
                except (ValueError, KeyError, TypeError):
                    continue

    def get(self, kind: str, key: str) -> Any:
        return self._values.get((kind, key))

    def put(self, kind: str, key: str, value: Any) -> None:
        self.put_many(kind, {key: value})

    def put_many(self, kind: str, values: dict[str, Any]) -> None:
        """Several notes of one kind, made durable together (one fsync)."""
        self._values.update({(kind, key): value for key, value in values.items()})
        if self.path is None or not values:
            return
        lines = [json.dumps({"kind": kind, "key": key, "value": value}) + "\n"
                 for key, value in values.items()]
        with self.path.open("a", encoding="utf-8") as handle:
            handle.writelines(lines)
            handle.flush()
            os.fsync(handle.fileno())
