"""Rate limiting and backoff.

``AdaptiveRate`` is aiolimiter's leaky bucket whose rate moves: a throttle cuts it (at most once
per cool-down, since the calls already in flight answer with the same throttle), and successes
raise it back additively towards the ceiling, never above. That is AIMD, the congestion control
of TCP (https://www.rfc-editor.org/rfc/rfc5681) and of the AWS SDKs' adaptive retry mode.

Backoff is exponential with full jitter:
https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiolimiter import AsyncLimiter


@dataclass(frozen=True, slots=True)
class RateStatistics:
    rate: float
    ceiling: float
    decreases: int
    increases: int


class AdaptiveRate:
    """A limiter per (operation, account, region)."""

    DECREASE = 0.6  # multiply the rate by this on a throttle
    INCREASE_PER_S = 0.05  # recover this share of the ceiling per second of successes
    FLOOR_SHARE = 0.02  # never below this share of the ceiling

    def __init__(
        self,
        ceiling: float,
        burst: float,
        *,
        adaptive: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ceiling <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.ceiling = ceiling
        self.adaptive = adaptive
        self._clock = clock
        self._limiter = AsyncLimiter(burst, burst / ceiling)
        self._rate = ceiling
        self._last_decrease = -1e9
        self._decreases = 0
        self._increases = 0

    @property
    def rate(self) -> float:
        return self._rate

    async def acquire(self) -> None:
        await self._limiter.acquire()

    def _set(self, rate: float) -> None:
        # aiolimiter derives its drip rate from max_rate / time_period at construction; keep
        # the bucket size (burst) and move the period. tests/unit/test_limits.py pins this.
        self._limiter._leak()
        self._limiter.time_period = self._limiter.max_rate / rate
        self._limiter._rate_per_sec = rate
        self._rate = rate

    def on_throttle(self) -> None:
        if not self.adaptive:
            return
        now = self._clock()
        # One cut per round trip of the calls in flight: they all saw the same full bucket.
        if now - self._last_decrease < max(1.0, 1.0 / self._rate):
            return
        self._last_decrease = now
        self._decreases += 1
        self._set(max(self.ceiling * self.FLOOR_SHARE, self._rate * self.DECREASE))

    def on_success(self) -> None:
        if not self.adaptive or self._rate >= self.ceiling:
            return
        # Each success adds INCREASE_PER_S * ceiling / rate: at `rate` successes a second, the
        # rate climbs by INCREASE_PER_S of the ceiling every second.
        step = self.INCREASE_PER_S * self.ceiling / self._rate
        self._increases += 1
        self._set(min(self.ceiling, self._rate + step))

    def statistics(self) -> RateStatistics:
        return RateStatistics(self._rate, self.ceiling, self._decreases, self._increases)


@dataclass(frozen=True, slots=True)
class Backoff:
    base_s: float = 0.25
    cap_s: float = 20.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``attempt``-th failed attempt (1-based): full jitter."""
        ceiling = min(self.cap_s, self.base_s * (2 ** (attempt - 1)))
        return (rng or random).uniform(0.0, ceiling)
