"""Runs of one host that spend the same quota know of each other (SPEC §9's neighbours, where
the neighbour is another connect-bulk run: a nightly run that overlaps the next, two jobs
against one account at once).

Each run keeps a small file in the state directory's ``runs/`` folder (``--state-dir``, where
the learned rates are) naming the quotas it spends now, by endpoint, operation, account and
region as ``learned`` keys them, with its rate for each, and writes it again every ``BEAT_S``.
A run counts, for each quota it spends, the runs whose files name it, itself among them, and
adds up their rates; its limiter takes an even share of what they spend together
(``AdaptiveRate.share``). A run that ends removes its file, and the others take its share at
once, instead of probing for it, some twenty calls at their share; a run that was killed
leaves a file that nobody counts once it is ``LIVE_S`` old, and the next run to look removes it
once it is ``FORGET_S`` old. A quota no call has spent for ``LIVE_S`` (a job between phases) is
not named, so a run that waits leaves its share to the runs that call.

Runs of other hosts, the console and other tools are not here: throttles find them, as they
always did. The files are a hint, like the learned rates: a folder that cannot be written
leaves the run to find its neighbours by throttles, with one warning.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from .learned import Key, default_dir

FOLDER = "runs"


class Peers:
    BEAT_S = 1.0  # how often a run says which quotas it spends, and counts the others
    LIVE_S = 5.0  # a file not touched for longer is a run that is gone
    FORGET_S = 600.0  # ... and one older than this is removed by the next run to look

    def __init__(self, folder: str | Path | None, endpoint: str | None) -> None:
        self.folder = (Path(folder) if folder else default_dir()) / FOLDER
        self.endpoint = endpoint or "aws"
        name = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self.path = self.folder / f"{name}.json"

    def _name(self, key: Key) -> str:
        return " ".join((self.endpoint, *key))

    def beat(self, spending: Mapping[Key, float]) -> dict[Key, tuple[int, float]]:
        """``say``, then ``count`` the runs of each quota this run spends."""
        self.say(spending)
        return self.count(spending)

    def count(self, keys: Iterable[Key]) -> dict[Key, tuple[int, float]]:
        """For each quota of ``keys``: how many runs spend it, this one among them, and the
        others' rates added up."""
        mine = {self._name(key): key for key in keys}
        runs = dict.fromkeys(mine.values(), (1, 0.0))
        now = time.time()
        try:
            paths = list(self.folder.glob("*.json"))
        except OSError:
            return runs  # a folder that cannot be read: no other run known
        for path in paths:
            if path == self.path:
                continue
            try:
                age = now - path.stat().st_mtime
                if age > self.LIVE_S:
                    if age > self.FORGET_S:
                        path.unlink(missing_ok=True)
                    continue
                quotas = json.loads(path.read_text()).get("quotas")
            except (OSError, ValueError, AttributeError):
                continue  # going as it is read, or not one of these files
            for name, rate in quotas.items() if isinstance(quotas, dict) else ():
                if name in mine and isinstance(rate, int | float) and rate >= 0:
                    count, others = runs[mine[name]]
                    runs[mine[name]] = (count + 1, others + rate)
        return runs

    def say(self, spending: Mapping[Key, float]) -> None:
        """Say which quotas this run spends now, at what rate each (raises ``OSError``)."""
        quotas = {self._name(key): round(rate, 4) for key, rate in spending.items()}
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        # No fsync: a file that a crash loses is a run that is gone, which it is.
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"quotas": quotas, "pid": os.getpid()}))
        os.replace(temporary, self.path)

    def leave(self) -> None:
        """This run spends nothing any more: the others take its shares at once."""
        self.path.unlink(missing_ok=True)
