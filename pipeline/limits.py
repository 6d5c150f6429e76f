"""Rate limiting and backoff.

``AdaptiveRate`` is aiolimiter's leaky bucket whose rate moves: a throttle cuts it to the rate
the service has been granting (measured, as BBR measures delivery rate rather than guessing:
https://queue.acm.org/detail.cfm?id=3022184), and successes probe slowly back up towards the
ceiling, never above: the decrease-fast, increase-slow shape of TCP's congestion control
(https://www.rfc-editor.org/rfc/rfc5681) and of the AWS SDKs' adaptive retry mode.

Backoff is exponential with full jitter:
https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/
"""

from __future__ import annotations

import random
import time
from collections import deque
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
    """A limiter per (operation, account, region).

    It starts at twice the burst a second and doubles every second of successes (slow start)
    until the first throttle. A throttle of a call sent after the last cut (the calls already in
    flight when the rate was cut answer with the same throttle and say nothing new) halves the
    rate, or drops it to a little under what the service has been granting over the last
    ``WINDOW_S`` seconds if that is lower. Successes then grow it by ``INCREASE_PER_S`` of itself
    every second, probing slowly back towards the ceiling, never above.
    """

    DECREASE = 0.5
    BELOW_MEASURED = 0.95
    INCREASE_PER_S = 0.06
    WINDOW_S = 2.0
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
        # Slow start, as TCP's: begin at twice the burst a second and double every second of
        # successes until the first throttle, so a ceiling far above the quota overshoots it by
        # one round of calls, not by the whole ceiling.
        start = min(ceiling, 2 * burst) if adaptive else ceiling
        self.burst = burst
        self._limiter = AsyncLimiter(burst, burst / start)
        self._tuned = start  # the rate self._limiter drips at
        self._carry = 0.0  # the old bucket's level, to be taken from the new one
        self._rate = start
        self._slow_start = adaptive and start < ceiling
        self._last_decrease = -1e9
        self._decreases = 0
        self._increases = 0
        self._successes: deque[float] = deque()
        self._started = clock()

    @property
    def rate(self) -> float:
        return self._rate

    async def acquire(self) -> None:
        while True:
            limiter = self._limiter
            carry, self._carry = self._carry, 0.0
            if carry:
                await limiter.acquire(carry)  # a fresh bucket: at once
            await limiter.acquire()
            if limiter is self._limiter:
                return
            # The rate moved while this call waited: its token came at the old rate; take one
            # at the new.

    RETUNE = 0.1  # a rise of less than this share keeps the bucket (a cut always retunes)

    def _set(self, rate: float) -> None:
        """aiolimiter fixes a bucket's drip rate when it is made: a new rate is a new bucket
        of the same size, holding what the old one held (its level, read through the public
        ``has_capacity``)."""
        self._rate = rate
        if self._tuned * (1 - 1e-9) <= rate < self._tuned * (1 + self.RETUNE):
            return
        # What the bucket held, and what a bucket made a moment ago had still to take.
        self._carry = min(self.burst, self._carry + self._fill_of(self._limiter))
        self._limiter = AsyncLimiter(self.burst, self.burst / rate)
        self._tuned = rate

    @staticmethod
    def _fill_of(limiter: AsyncLimiter) -> float:
        """How full the bucket is: the burst less the most it would let through now."""
        low, high = 0.0, float(limiter.max_rate)
        if limiter.has_capacity(high):
            return 0.0
        for _ in range(20):
            middle = (low + high) / 2
            low, high = (middle, high) if limiter.has_capacity(middle) else (low, middle)
        return float(limiter.max_rate) - low

    def _measured(self, now: float) -> float | None:
        """Successes per second over the last window, once there is a window to speak of."""
        while self._successes and self._successes[0] < now - self.WINDOW_S:
            self._successes.popleft()
        span = min(self.WINDOW_S, now - self._started)
        if span < 0.25 or not self._successes:
            return None
        return len(self._successes) / span

    def now(self) -> float:
        return self._clock()

    def on_throttle(self, sent_at: float) -> None:
        """A call that acquired this limiter at ``sent_at`` (``now()``) was throttled."""
        if not self.adaptive:
            return
        now = self._clock()
        if sent_at <= self._last_decrease:
            return
        self._last_decrease = now
        self._decreases += 1
        self._slow_start = False
        target = self._rate * self.DECREASE
        measured = self._measured(now)
        if measured is not None:
            target = min(target, measured * self.BELOW_MEASURED)
        self._set(max(self.ceiling * self.FLOOR_SHARE, target))

    def on_success(self) -> None:
        if not self.adaptive:
            return
        self._successes.append(self._clock())
        if self._rate >= self.ceiling:
            return
        # At `rate` successes a second, +1 each doubles the rate every second (slow start);
        # +INCREASE_PER_S each grows it by that share of itself every second.
        self._increases += 1
        step = 1.0 if self._slow_start else self.INCREASE_PER_S
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
