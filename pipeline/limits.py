"""Rate limiting and backoff.

``AdaptiveRate`` paces the calls of one (operation, account, region) with aiolimiter's leaky
bucket and moves the bucket's rate as the service answers:

- **Measure the grant, don't guess it** (as BBR measures delivery rate rather than inferring it
  from loss: https://queue.acm.org/detail.cfm?id=3022184). A throttle says the service's token
  bucket was empty when the call arrived. Between two throttles every token the service made was
  spent, so the calls sent between them that succeeded, over the time between them, are exactly
  the rate the service grants this client (its share of it when a neighbour spends the same
  quota), whatever the quota's burst. A throttle cuts the rate to ``MARGIN`` under that measured
  grant; without a measurement (the first throttle, or two too close together to count) it cuts
  by ``BETA``, and, throttled again, never under the rate that got through since the last cut.
- **Recover with CUBIC's shape** (RFC 9438, https://www.rfc-editor.org/rfc/rfc9438, the curve the
  AWS SDKs' adaptive retry mode uses): ``W(t) = W_max + C (t - K)^3``: concave back to the last
  grant ``W_max`` within ``K`` seconds, a plateau there, then convex probing above it, slowly at
  first, so that one throttle at the edge of the quota costs little and a quota that grew (a
  neighbour left) is found again. The convex half has a ``C`` of its own, reaching
  ``RESUME_ABOVE`` over the grant ``PROBE_S`` after the plateau: with the concave half's (set by
  a cut of ``MARGIN``, not CUBIC's 30%) the probe took six seconds to get 10% over, and a run
  whose neighbour had left went on at its share for ten seconds after its last throttle (two
  runs on one quota got 0.88-1.09 R together in 27 runs, three under 0.9 R; with the probe's
  own ``C``, 0.96-1.06 R in 5, at 2.3-2.8% of calls throttled against 1.6-2.8%).
  ``RESUME_ABOVE`` is 20%: at 10%, a probe that fast is not throttled before it gets there at
  the edge of the quota (the bucket holds what the cut under the grant saved), and the rate
  doubles into the quota again.
- **At a low rate the curve around a measured grant is timed in calls**: ``K`` and the probe
  last at least as long as ``K_CALLS`` and ``PROBE_CALLS`` calls of the grant take. The
  service's bucket refills by calls: at 2/s the probe's two seconds are four calls, and a curve
  timed in seconds alone reached into the quota again every dozen calls (told five times its
  quota, a run was throttled on 7.8% of its calls at 2/s and 3.1% at 5/s, against 0.9% at
  20/s; in calls, 3.2% and 1.8%, in a simulated 300 s). From 10/s up nothing changes. After a
  blind cut the curve stays in seconds: its next throttle measures the grant, and timed in
  calls there too, two runs in ten at a quota of 8/s measured none in 90 calls.
- **Start slow** (TCP's slow start, RFC 5681): from ``START_RATE`` (or the ceiling when lower),
  doubling every second of successes until the first throttle or the ceiling. The throttle halves
  what got through in the second before it, not the rate, which ran ahead of it (cutting the
  rate, a run at 5x over its quota took seven throttles there, against five). A run that knows
  the rate an earlier run learned starts from it instead (``Learned``), never above the ceiling.
- **A quota that grew is taken at once**: once the probe runs ``RESUME_ABOVE`` over the last
  grant with no throttle, the grant is out of date (the neighbour that shared the quota is
  gone, or the quota was raised), and the rate goes back to slow start, as HyStart++ (RFC 9406,
  https://www.rfc-editor.org/rfc/rfc9406) goes back to slow start when it finds it left too
  early. A run at the edge of its quota never gets there: the bucket is empty long before.
  Without it, a run left alone on a quota it shared takes the convex half of the curve, some
  ten seconds, to climb from its share to the whole.
- **The bucket never outruns the grant**: while adapting it holds at most a second of the current
  rate, and a cut empties it, so after a throttle nothing goes out faster than the measured rate
  whatever ``--burst`` says.
- **No phase lock**: every call leaves at a random point of its interval (``JITTER``), so
  that of two runs on one quota, the one whose calls arrive just as the service's bucket makes
  a token cannot take every token and leave the other none. Calls whose token was free jitter
  too: two runs' first bursts otherwise go out in step (jittering paced calls only, two runs on
  one quota got 0.847-1.064 R together in six runs, against 0.925-1.069).

Backoff is exponential with full jitter:
https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/
"""

from __future__ import annotations

import bisect
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio
from aiolimiter import AsyncLimiter


@dataclass(frozen=True, slots=True)
class RateStatistics:
    rate: float
    ceiling: float
    decreases: int
    increases: int


@dataclass(frozen=True, slots=True)
class Learned:
    """What a run learned of a quota: the grant it measured (``measured``), or the highest rate
    that held without a measurement."""

    rate: float
    measured: bool


class AdaptiveRate:
    """A limiter per (operation, account, region); see the module's docstring."""

    START_RATE = 10.0
    MARGIN = 0.03  # a measured cut goes this share under the grant
    BETA = 0.7  # a cut without a measurement keeps this share of the rate
    SLOW_START_BETA = 0.5  # ... or, in slow start, this share of what got through in a second
    K_MEASURED_S = 4.0  # seconds back to a measured grant, then probing above it
    K_BLIND_S = 2.0  # seconds back to the rate a blind cut left
    PROBE_S = 2.0  # seconds of probing past the plateau to reach RESUME_ABOVE over it
    K_CALLS = 40.0  # ... around a measured grant, at least as long as this many calls take
    PROBE_CALLS = 20.0  # ... and the probe this many
    RESUME_ABOVE = 0.20  # a probe this share over the last grant, unthrottled: slow start
    MIN_SAMPLES = 20  # successes between two throttles to measure the grant
    MIN_HELD = 5  # ... or since the last cut, to cut no lower than them (no measurement)
    HORIZON_S = 60.0  # how far back a measurement may reach
    BURST_S = 1.0  # while adapting the bucket holds at most this many seconds of the rate
    RETUNE = 0.01  # a rise of less than this share keeps the bucket (a cut always retunes)
    FLOOR_SHARE = 0.02  # never below this share of the ceiling ...
    FLOOR_MAX = 1.0  # ... or one call a second, whichever is lower
    JITTER = 0.5  # a paced call leaves up to this share of its interval late ...
    JITTER_BELOW = 200.0  # ... below this rate

    def __init__(
        self,
        ceiling: float,
        burst: float,
        *,
        adaptive: bool = True,
        learned: Learned | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ceiling <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.ceiling = ceiling
        self.burst = burst
        self.adaptive = adaptive
        self._clock = clock
        now = clock()
        self._rate = ceiling
        self._slow_start = False
        self._throttled = False
        self._grant: float | None = None  # the last measured grant
        self._cut_at = -1e9  # when the rate was last cut (calls sent before say nothing new)
        self._epoch = -1e9  # where the curve's time starts
        self._w_max = ceiling
        self._k = 0.0
        self._c = self._c_probe = 0.0
        if not adaptive:
            start = ceiling
        elif learned is not None and learned.measured:
            self._grant = min(ceiling, learned.rate)
            self._start_below(self._grant, now)
            self._throttled = True
            start = self._rate
        else:
            held = learned.rate if learned is not None else 0.0
            start = min(ceiling, max(self.START_RATE, held))
            self._slow_start = start < ceiling
        self._rate = start
        self._successes: list[float] = []  # send times of the calls that succeeded, sorted
        self._throttles: list[float] = []  # send times of the calls that were throttled
        self._peak = 0.0  # the highest success rate over a second so far
        self._decreases = 0
        self._increases = 0
        size = self._size(start)
        self._limiter = AsyncLimiter(size, size / start)
        self._tuned = start  # the rate self._limiter drips at
        # The bucket's level, to be taken on the next acquire. The service's bucket starts at
        # the first call's arrival, later than this one by that call's latency (a new
        # connection's, the slowest): one token held back keeps the burst inside it.
        self._carry = size if self._throttled else min(1.0, size - 1.0)

    def _start_below(self, grant: float, now: float) -> None:
        """Rate ``MARGIN`` under ``grant``, CUBIC's curve back to it in ``K_MEASURED_S``."""
        self._rate = grant * (1 - self.MARGIN)
        self._curve(grant, self._rate, self.K_MEASURED_S, now, measured=True)

    def _curve(self, w_max: float, start: float, k: float, now: float, *,
               measured: bool = False) -> None:
        """CUBIC's curve from ``start`` at ``now``: back to ``w_max`` in ``k`` seconds,
        ``RESUME_ABOVE`` over it ``PROBE_S`` later; around a ``measured`` grant, in
        ``K_CALLS`` and ``PROBE_CALLS`` calls of it at least."""
        probe = self.PROBE_S
        if measured:
            k, probe = max(k, self.K_CALLS / w_max), max(probe, self.PROBE_CALLS / w_max)
        self._w_max, self._k, self._cut_at, self._epoch = w_max, k, now, now
        self._c = max(w_max - start, 1e-9 * w_max) / k**3
        self._c_probe = self.RESUME_ABOVE * w_max / probe**3

    @property
    def rate(self) -> float:
        return self._rate

    def _size(self, rate: float) -> float:
        """The bucket: ``--burst`` until the first throttle at the ceiling; while adapting, at
        most a second of the rate."""
        if not self._throttled and not self._slow_start and rate >= self.ceiling:
            return self.burst
        return max(1.0, min(self.burst, rate * self.BURST_S))

    async def acquire(self) -> None:
        while True:
            limiter = self._limiter
            carry, self._carry = self._carry, 0.0
            if carry:
                await limiter.acquire(min(carry, float(limiter.max_rate)))  # a fresh bucket
            await limiter.acquire()
            if limiter is self._limiter:
                break
            # The rate moved while this call waited: its token came at the old rate; take one
            # at the new.
        if self._jitters():
            # Calls leave at a random point of their interval, so that two clients on one
            # quota cannot lock phases with the service's bucket, one taking every token as
            # it is made and the other none. It must hold before the first throttle too: a
            # run told the quota's rate truly is never throttled, and one that locks phases so
            # starves its neighbour down to the floor for as long as it runs. The rate is the
            # bucket's still; a call late by part of its interval is absorbed by any burst.
            await anyio.sleep(random.uniform(0.0, self.JITTER / self._rate))

    def _jitters(self) -> bool:
        return self.adaptive and self._rate < self.JITTER_BELOW

    def would_wait(self) -> bool:
        """Whether ``acquire`` would suspend now: a jitter to sleep, or no token free (with
        what a fresh bucket takes first)."""
        limiter = self._limiter
        return self._jitters() \
            or not limiter.has_capacity(min(self._carry, float(limiter.max_rate)) + 1)

    def _set(self, rate: float, *, empty: bool = False) -> None:
        """aiolimiter fixes a bucket's drip rate when it is made: a new rate is a new bucket,
        holding what the old one held (its level, read through the public ``has_capacity``),
        or full when ``empty`` (a cut: nothing more goes out at once)."""
        self._rate = rate
        if not empty and self._tuned * (1 - 1e-9) <= rate < self._tuned * (1 + self.RETUNE):
            return
        size = self._size(rate)
        if empty:
            self._carry = size
        else:
            # What the old bucket would let through at once, the new one lets through, no
            # more: a bigger bucket fills at its rate, it does not make tokens.
            old = self._limiter
            free = max(0.0, float(old.max_rate) - self._carry - self._fill_of(old))
            self._carry = max(0.0, size - free)
        self._limiter = AsyncLimiter(size, size / rate)
        self._tuned = rate

    @staticmethod
    def _fill_of(limiter: AsyncLimiter) -> float:
        """How full the bucket is: its size less the most it would let through now."""
        low, high = 0.0, float(limiter.max_rate)
        if limiter.has_capacity(high):
            return 0.0
        for _ in range(16):
            middle = (low + high) / 2
            low, high = (middle, high) if limiter.has_capacity(middle) else (low, middle)
        return float(limiter.max_rate) - low

    def now(self) -> float:
        return self._clock()

    def _forget(self, now: float) -> None:
        for times in (self._successes, self._throttles):
            old = bisect.bisect_left(times, now - self.HORIZON_S)
            if old > len(times) // 2:
                del times[:old]

    def _succeeded_between(self, after: float, before: float) -> int:
        """How many calls sent after ``after`` and before ``before`` succeeded."""
        return bisect.bisect_left(self._successes, before) \
            - bisect.bisect_right(self._successes, after)

    def _measure(self, sent_at: float) -> float | None:
        """The grant between the latest earlier throttle with enough successes since and the
        throttle of a call sent at ``sent_at``."""
        for earlier in reversed(self._throttles):
            if earlier >= sent_at:
                continue
            if sent_at - earlier > self.HORIZON_S:
                return None
            count = self._succeeded_between(earlier, sent_at)
            if count >= self.MIN_SAMPLES:
                return count / (sent_at - earlier)
        return None

    def _held(self, sent_at: float) -> float | None:
        """The rate of the calls that got through since the last cut (a second of them at
        most), when they are enough to count and fewer than the rate: the share of an empty
        bucket this run holds at its current rate."""
        start = max(self._cut_at, sent_at - 1.0)
        count = self._succeeded_between(start, sent_at)
        if count < self.MIN_HELD:
            return None
        held = count / (sent_at - start)
        return held if held < self._rate else None

    def on_throttle(self, sent_at: float) -> None:
        """A call that acquired this limiter at ``sent_at`` (``now()``) was throttled."""
        if not self.adaptive:
            return
        now = self._clock()
        self._forget(now)
        grant = self._measure(sent_at)
        bisect.insort(self._throttles, sent_at)
        if sent_at <= self._cut_at:
            return  # sent before the last cut: it says nothing new
        self._decreases += 1
        again, self._throttled = self._throttled, True
        floor = min(self.ceiling * self.FLOOR_SHARE, self.FLOOR_MAX)
        if grant is not None:
            self._grant = grant
            self._start_below(grant, now)
        elif self._slow_start:
            # The rate that doubled into the throttle never held, nor did more than got through
            # in the second before it (the rate runs ahead of the calls it lets out, doubling as
            # each succeeds): probe slowly above half of that.
            got = self._succeeded_between(sent_at - 1.0, sent_at)
            if got >= self.MIN_HELD:
                self._rate = min(self._rate, float(got))
            self._rate *= self.SLOW_START_BETA
            self._curve(self._rate, self._rate * (1 - self.MARGIN), self.K_MEASURED_S, now)
            self._epoch -= self._k  # from the convex part of the curve on
        elif again and (held := self._held(sent_at)) is not None:
            # Throttled again before a grant could be measured: the service's bucket is empty
            # and shared, and what got through since the last cut is this run's share of it.
            # A cut goes no lower, however many throttles come in a row, so that two runs
            # that start together do not split the quota by the luck of who was throttled
            # more often (a cut of BETA each, and the unlucky one ends with a fifth of it).
            rate = max(self._rate * self.BETA, held * (1 - self.MARGIN))
            self._curve(rate / (1 - self.MARGIN), rate, self.K_BLIND_S, now)
            self._rate = rate
        else:
            self._curve(self._rate, self._rate * self.BETA, self.K_BLIND_S, now)
            self._rate *= self.BETA
        self._slow_start = False
        self._set(max(floor, min(self.ceiling, self._rate)), empty=True)

    def on_success(self, sent_at: float) -> None:
        """A call that acquired this limiter at ``sent_at`` (``now()``) succeeded."""
        if not self.adaptive:
            return
        now = self._clock()
        self._forget(now)  # a run that is never throttled keeps a window, not every call
        bisect.insort(self._successes, sent_at)
        second = len(self._successes) - bisect.bisect_left(self._successes, now - 1.0)
        self._peak = max(self._peak, float(second))
        if self._rate >= self.ceiling:
            return
        if self._slow_start:
            rate = self._rate + math.log(2)  # at r successes a second: doubles every second
        else:
            t = now - self._epoch - self._k
            rate = self._w_max + (self._c if t < 0 else self._c_probe) * t**3
        if rate > self._rate:
            self._increases += 1
            if rate >= self.ceiling:
                self._slow_start = False
            elif not self._slow_start and rate > self._w_max * (1 + self.RESUME_ABOVE):
                self._slow_start = True  # the quota grew: the curve is too slow to take it
            self._set(min(self.ceiling, rate))

    def learned(self) -> Learned | None:
        """What the next run against this quota may start from."""
        if not self.adaptive:
            return None
        if self._grant is not None:
            return Learned(self._grant, measured=True)
        held = min(self._rate, self._peak)
        if held > self.START_RATE:  # below it, the next run would start no differently
            return Learned(held, measured=False)
        return None

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
