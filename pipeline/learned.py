"""The rates earlier runs learned, kept across runs (SPEC §9), so that a nightly run starts where
the last run against the same quota ended instead of probing from scratch.

One small JSON file, ``learned-rates.json``, in the state directory (``--state-dir``; default
``$XDG_CACHE_HOME/connect-bulk``, else ``~/.cache/connect-bulk``), keyed by endpoint, operation,
account and region, as AWS counts quotas (a sandbox's endpoint is a quota of its own). Runs that
end at once merge their entries under a lock; an entry older than ``MAX_AGE`` is forgotten. The
file is a hint: one that cannot be read starts from scratch, one that cannot be written is a
warning, never a failed run.
"""

from __future__ import annotations

import fcntl
import json
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from .limits import Learned
from .rundir import atomic_write, iso, utc_now

FILE = "learned-rates.json"
MAX_AGE = timedelta(days=30)
Key = tuple[str, str, str]  # operation, account, region


def default_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "connect-bulk"


class LearnedRates:
    def __init__(self, folder: str | Path | None, endpoint: str | None) -> None:
        self.folder = Path(folder) if folder else default_dir()
        self.path = self.folder / FILE
        self.endpoint = endpoint or "aws"
        self._entries: dict[str, Any] | None = None

    def _key(self, key: Key) -> str:
        return " ".join((self.endpoint, *key))

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        rates = data.get("rates") if isinstance(data, dict) else None
        if not isinstance(rates, dict):
            return {}
        oldest = utc_now() - MAX_AGE
        kept = {}
        for name, entry in rates.items():
            try:
                if datetime.fromisoformat(entry["at"]) >= oldest and float(entry["rate"]) > 0:
                    kept[name] = entry
            except (KeyError, TypeError, ValueError):
                continue
        return kept

    def get(self, key: Key) -> Learned | None:
        if self._entries is None:
            self._entries = self._read()
        entry = self._entries.get(self._key(key))
        if entry is None:
            return None
        return Learned(float(entry["rate"]), measured=bool(entry.get("measured")))

    def save(self, learned: dict[Key, Learned]) -> None:
        """Merge ``learned`` into the file (raises ``OSError``)."""
        if not learned:
            return
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        with (self.folder / f".{FILE}.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = self._read()
            at = iso(utc_now())
            for key, value in learned.items():
                entries[self._key(key)] = {"rate": round(value.rate, 4),
                                           "measured": value.measured, "at": at}
            with atomic_write(self.path) as tmp:
                tmp.write_text(json.dumps({"version": 1, "rates": entries}, indent=1,
                                          sort_keys=True) + "\n")
