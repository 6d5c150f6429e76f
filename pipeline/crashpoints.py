"""Named moments at which a test can have the process killed (SIGKILL, no clean-up), to prove
that a run survives a crash at exactly that moment.

Set ``CONNECT_BULK_CRASH_AT=NAME`` (or ``NAME:N``, the N-th time) in the environment of the run;
unset, a crash point costs one comparison. The points: ``first-call``, ``wal-synced``,
``part-written``, ``wal-truncated``, ``checkpoint-written``, ``finalize-results``, ``finalized``.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_TARGET, _, _NTH = (os.environ.get("CONNECT_BULK_CRASH_AT") or "").partition(":")
_hits: Counter[str] = Counter()


def crashpoint(name: str) -> None:
    if name != _TARGET:
        return
    _hits[name] += 1
    if _hits[name] >= int(_NTH or 1):
        os.kill(os.getpid(), signal.SIGKILL)
