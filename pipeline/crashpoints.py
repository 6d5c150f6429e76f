"""Named moments at which a test can have the process killed (SIGKILL, no clean-up), to prove
that a run survives a crash at exactly that moment.

Set ``CONNECT_BULK_CRASH_AT=NAME`` (or ``NAME:N``, the N-th time) in the environment of the run;
unset, a crash point costs one comparison. The points: ``input-read`` (the input's bytes are read,
not yet parsed), ``run-created`` (``run.json`` written), ``first-call`` (before each call is
sent), ``wal-synced``, ``part-written``, ``wal-truncated``, ``checkpoint-written``,
``finalize-results``, ``finalized``, ``publishing`` (before each upload of ``--publish``).

``CONNECT_BULK_CRASH_SIGNAL`` sends another signal than SIGKILL: ``TERM`` or ``INT`` (a stop at
exactly that moment), or ``STOP`` (the process freezes there until sent SIGCONT, so a test can
act while it holds its lock).
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_TARGET, _, _NTH = (os.environ.get("CONNECT_BULK_CRASH_AT") or "").partition(":")
_SIGNAL = os.environ.get("CONNECT_BULK_CRASH_SIGNAL") or "KILL"
_hits: Counter[str] = Counter()


def crashpoint(name: str) -> None:
    if name != _TARGET:
        return
    _hits[name] += 1
    if _hits[name] == int(_NTH or 1):
        os.kill(os.getpid(), signal.Signals[f"SIG{_SIGNAL}"])
