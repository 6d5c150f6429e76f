"""Durations (``45m``, ``2h``, ``1h30m``, ``90s``) and deadlines (a duration from now, or a UTC
clock time ``05:30``) as the options take them."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from .errors import UsageError

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?$")
_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


def parse_duration(text: str, *, option: str) -> timedelta:
    cleaned = text.strip().lower()
    match = _DURATION.match(cleaned)
    if cleaned and match and any(match.groups()):
        hours, minutes, seconds = match.groups()
        return timedelta(hours=int(hours or 0), minutes=int(minutes or 0),
                         seconds=float(seconds or 0))
    raise UsageError(f"{option} {text!r}: give a duration such as 45m, 2h, 1h30m or 90s")


def parse_deadline(text: str, now: datetime) -> datetime:
    """``45m``, ``2h``, ``1h30m``, ``90s`` from now, or ``05:30`` (UTC, the next one)."""
    clock = _CLOCK.match(text.strip())
    if clock:
        moment = now.replace(hour=int(clock.group(1)), minute=int(clock.group(2)), second=0,
                             microsecond=0)
        return moment if moment > now else moment + timedelta(days=1)
    try:
        return now + parse_duration(text, option="--deadline")
    except UsageError:
        raise UsageError(f"--deadline {text!r}: give a duration (45m, 2h, 1h30m) or a UTC "
                         "time (05:30)") from None
