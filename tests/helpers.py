"""Helpers shared by the unit and the CLI tests."""

from __future__ import annotations


def split_calls(size: int, bad_positions: set[int], local: frozenset[int] = frozenset()) -> int:
    """Calls the split-in-halves rule makes for one batch of ``size`` items whose items at
    ``bad_positions`` make the whole call fail (SPEC §3), counting the first call; items at
    ``local`` positions fail without being sent (an E.164 number not claimed there)."""

    def calls(start: int, end: int) -> int:
        if all(start <= p < end and p in local for p in range(start, end)):
            return 0
        bad = any(start <= p < end for p in bad_positions)
        if not bad or end - start == 1:
            return 1
        middle = start + (end - start) // 2
        return 1 + calls(start, middle) + calls(middle, end)

    return calls(0, size)
