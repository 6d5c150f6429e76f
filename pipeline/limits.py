"""Rate limiting and backoff.

``AdaptiveRate`` paces the calls of one (operation, account, region) with aiolimiter's leaky
bucket and moves the bucket's rate as the service answers:

- **Measure the grant, don't guess it** (as BBR measures delivery rate rather than inferring it
  from loss: https://queue.acm.org/detail.cfm?id=3022184). A throttle says the service's token
  bucket was empty. Between two throttles every token it made was spent, so the calls sent
  between them that succeeded, over the time between them, are the rate it grants this client
  (its share, with a neighbour), whatever the quota's burst. A throttle cuts the rate to
  ``MARGIN`` under that grant; without one (the first throttle, or two too close to count) by
  ``BETA``, and, throttled again, never under the rate that got through since the last cut.
- **Recover with CUBIC's shape** (RFC 9438, https://www.rfc-editor.org/rfc/rfc9438, as the AWS
  SDKs' adaptive retry mode): ``W(t) = W_max + C (t - K)^3``, concave back to the last grant
  within ``K`` seconds, a plateau, then convex probing above it, so that a throttle at the edge
  of the quota costs little and a quota that grew is found again. The probe has a ``C`` of its
  own, ``RESUME_ABOVE`` (20%) over the grant ``PROBE_S`` after the plateau (the concave half's,
  set by a cut of ``MARGIN``, left a run whose neighbour had gone at its share for ten seconds).
- **At a low rate the curve around a measured grant is timed in calls** (``K_CALLS``,
  ``PROBE_CALLS``): the service's bucket refills by calls, and at 2/s two seconds are four.
  After a blind cut it stays in seconds, so that the next throttle measures the grant soon.
- **Start slow** (TCP's slow start, RFC 5681): from ``START_RATE`` (or the ceiling), doubling
  every second of successes until the first throttle, which halves what got through in the
  second before it (not the rate, which ran ahead of it); or from the rate an earlier run
  learned (``Learned``), never above the ceiling.
- **A quota that grew is taken at once**: a probe ``RESUME_ABOVE`` over the grant with no
  throttle goes back to slow start, as HyStart++ (RFC 9406,
  https://www.rfc-editor.org/rfc/rfc9406) does when it left slow start too early. A run at the
  edge of its quota never gets there: the bucket is empty long before.
- **Runs of one host share by what they say, not by throttles** (``share``, ``peers``): each
  knows how many runs of its host spend its quota and at what rates, and takes an even share of
  what they spend together, at once when one comes or ends. Between them a blind curve is timed
  in calls too (``K_BLIND_CALLS``), a throttle again comes back to the cut, not to the rate
  throttled, and the probe never goes back to slow start: a run that ends says so. (At 2/s, two
  runs that found each other by throttles alone were throttled on a fifth of their calls.)
- **The bucket never outruns the grant**: while adapting it holds at most a second of the rate,
  and a cut empties it, whatever ``--burst`` says.
- **No phase lock**: every call leaves at a random point of its interval (``JITTER``), so that
  of two runs on one quota the one whose calls arrive as the service's bucket makes a token
  cannot take every token; calls whose token was free too, or two runs' first bursts go in step.

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
    K_BLIND_CALLS = 8.0  # ... shared with other runs of this host, after a blind cut this many
    PROBE_BLIND_CALLS = 16.0  # ... and the probe this many
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
    BALANCE = 0.15  # runs of one host whose shares are further apart even them out
    LATELY_S = 2.0  # ... not this soon after runs came or went

    def __init__(
        self,
        ceiling: float,
        burst: float,
        *,
        adaptive: bool = True,
        learned: Learned | None = None,
        runs: int = 1,
        others: float = 0.0,
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
        self.runs = runs  # runs of this host that spend this quota, this one among them
        self._others, self._runs_at = others, now  # ... their rates added up; since when
        self._answered = now  # when the last answer came
        self._k = 0.0
        self._c = self._c_probe = 0.0
        if not adaptive:
            start = ceiling
        elif runs > 1 and others > 0:
            # Other runs of this host spend this quota already: this one takes an even share
            # of what they spend, and they make room for it (``share``).
            start = min(ceiling, others / runs)
            self._probe_from(start, now)
            self._throttled = True
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

    def _probe_from(self, rate: float, now: float) -> None:  # the curve's plateau: probing
        self._curve(rate, rate, self.K_BLIND_S, now)
        self._epoch -= self._k

    def _curve(self, w_max: float, start: float, k: float, now: float, *,
               measured: bool = False) -> None:
        """CUBIC's curve from ``start`` at ``now``: back to ``w_max`` in ``k`` seconds,
        ``RESUME_ABOVE`` over it ``PROBE_S`` later; at least ``K_CALLS`` and ``PROBE_CALLS``
        calls around a ``measured`` grant, ``*_BLIND_CALLS`` shared with runs of this host."""
        probe = self.PROBE_S
        if measured:
            k, probe = max(k, self.K_CALLS / w_max), max(probe, self.PROBE_CALLS / w_max)
        elif self.runs > 1:
            k = max(k, self.K_BLIND_CALLS / w_max)
            probe = max(probe, self.PROBE_BLIND_CALLS / w_max)
        self._w_max, self._k, self._cut_at, self._epoch = w_max, k, now, now
        self._c = max(w_max - start, 1e-9 * w_max) / k**3
        self._c_probe = self.RESUME_ABOVE * w_max / probe**3

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def _floor(self) -> float:
        return min(self.ceiling * self.FLOOR_SHARE, self.FLOOR_MAX)

    def _size(self, rate: float) -> float:
        """``--burst`` until the first throttle at the ceiling, then a second of the rate."""
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
            # No phase lock with the service's bucket (the module's docstring), before the
            # first throttle too: a run told the quota's rate truly is never throttled, and
            # one locked so starves its neighbour to the floor for as long as it runs.
            await anyio.sleep(random.uniform(0.0, self.JITTER / self._rate))

    def _jitters(self) -> bool:
        return self.adaptive and self._rate < self.JITTER_BELOW

    def would_wait(self) -> bool:
        """Whether ``acquire`` would suspend now: a jitter, or no token free (a fresh bucket's
        first take too)."""
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
        most), when enough to count and under the rate: this run's share of an empty bucket."""
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
        now = self._answered = self._clock()
        self._forget(now)
        grant = self._measure(sent_at)
        bisect.insort(self._throttles, sent_at)
        if sent_at <= self._cut_at:
            return  # sent before the last cut: it says nothing new
        self._decreases += 1
        again, self._throttled = self._throttled, True
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
            self._probe_from(self._rate, now)
        elif again and ((held := self._held(sent_at)) is not None or self.runs > 1):
            # Throttled again before a grant could be measured: the service's bucket is empty
            # and shared, and what got through since the last cut is this run's share of it.
            # A cut goes no lower, however many throttles come in a row, so that two runs
            # that start together do not split the quota by the luck of who was throttled
            # more often (a cut of BETA each, and the unlucky one ends with a fifth of it).
            # Either way the curve comes back to the cut, not to the rate throttled: that was
            # over this run's share (with runs of this host, whose share it knows to be
            # smaller, even when too few calls got through to count).
            rate = max(self._rate * self.BETA, (held or 0.0) * (1 - self.MARGIN))
            self._curve(rate / (1 - self.MARGIN), rate, self.K_BLIND_S, now)
            self._rate = rate
        else:
            self._curve(self._rate, self._rate * self.BETA, self.K_BLIND_S, now)
            self._rate *= self.BETA
        self._slow_start = False
        self._set(max(self._floor, min(self.ceiling, self._rate)), empty=True)

    def on_success(self, sent_at: float) -> None:
        """A call that acquired this limiter at ``sent_at`` (``now()``) succeeded."""
        if not self.adaptive:
            return
        now = self._answered = self._clock()
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
            if rate >= self.ceiling:
                self._slow_start = False
            elif not self._slow_start and self.runs == 1 \
                    and rate > self._w_max * (1 + self.RESUME_ABOVE):
                # The quota grew: the curve is too slow to take it. (A run of this host that
                # ends says so, ``share``: a run sharing with it has no need to guess.)
                self._slow_start = True
            self._set(min(self.ceiling, rate))

    def answered_within(self, seconds: float) -> bool:  # or started within them
        return self._clock() - self._answered <= seconds

    def share(self, runs: int, others: float) -> None:
        """``runs`` runs of this host spend this quota, this one among them, the others at
        ``others`` together (``peers``): an even share each, at once when one comes or ends
        (no throttle, no probe to find out), and shares ``BALANCE`` apart even out."""
        if not self.adaptive:
            return
        now, before, self.runs = self._clock(), self.runs, runs
        others, self._others = self._others, others
        if runs > before:  # those that came take their share of this one's
            self._runs_at = now
            share = self._rate * before / runs
        elif runs < before:  # what those that ended spent (in the others' rates a beat ago)
            self._runs_at = now
            share = (self._rate + others) / runs
        elif runs > 1 and now - self._runs_at >= self.LATELY_S \
                and abs(self._rate * runs / (self._rate + self._others) - 1) > self.BALANCE:
            share = (self._rate + self._others) / runs  # each has had its beat since a change
        else:
            return
        self._take(share)

    def _take(self, share: float) -> None:
        """``share`` is this run's: the grant, or where the curve probes from."""
        now, old = self._clock(), self._rate
        slow_start, self._slow_start, self._throttled = self._slow_start, False, True
        if slow_start:  # nothing known of the quota yet: doubling on from the share
            self._rate, self._slow_start = share, share < self.ceiling
        elif self._grant is not None:
            self._grant = share
            self._start_below(share, now)
        else:
            self._probe_from(share, now)
            self._rate = share
        self._set(max(self._floor, min(self.ceiling, self._rate)), empty=self._rate < old)

    def learned(self) -> Learned | None:
        """What the next run against this quota may start from: the whole quota, where
        this run had a share of it."""
        if not self.adaptive:
            return None
        if self._grant is not None:
            return Learned(self._grant * self.runs, measured=True)
        held = min(self._rate, self._peak) * self.runs
        if held > self.START_RATE:  # below it, the next run would start no differently
            return Learned(held, measured=False)
        return None

    @property
    def decreases(self) -> int:
        """How many times a throttle cut the rate."""
        return self._decreases


@dataclass(frozen=True, slots=True)
class Backoff:
    base_s: float = 0.25
    cap_s: float = 20.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``attempt``-th failed attempt (1-based): full jitter."""
        ceiling = min(self.cap_s, self.base_s * (2 ** (attempt - 1)))
        return (rng or random).uniform(0.0, ceiling)
