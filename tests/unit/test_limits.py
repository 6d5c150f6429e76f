"""The adaptive limiter and the backoff, with a fake clock."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from connect_bulk.pipeline.limits import AdaptiveRate, Backoff, Learned


def in_loop(test: Callable[..., None]) -> Callable[..., None]:
    """Run a sync test body inside an event loop (aiolimiter reads the loop's clock)."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        async def body() -> None:
            test(*args, **kwargs)

        anyio.run(body)

    return wrapper


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def k_s(grant: float) -> float:
    """The curve's seconds back to a measured ``grant``: ``K_MEASURED_S``, or ``K_CALLS`` calls
    of it."""
    return max(AdaptiveRate.K_MEASURED_S, AdaptiveRate.K_CALLS / grant)


def probe_s(grant: float) -> float:
    """The probe's seconds past the plateau: ``PROBE_S``, or ``PROBE_CALLS`` calls of it."""
    return max(AdaptiveRate.PROBE_S, AdaptiveRate.PROBE_CALLS / grant)


def succeed(limiter: AdaptiveRate, clock: Clock, rate: float, seconds: float) -> None:
    """Calls sent at ``rate`` a second for ``seconds``, each answered at once with success."""
    for _ in range(round(rate * seconds)):
        clock.now += 1 / rate
        limiter.on_success(clock.now)


@in_loop
def test_the_grant_between_two_throttles_is_measured_and_the_rate_goes_just_under_it() -> None:
    clock = Clock()
    limiter = AdaptiveRate(100.0, 250.0, clock=clock)
    limiter.on_throttle(clock.now)  # the service's bucket is empty: no measurement yet
    succeed(limiter, clock, 20.0, 3.0)  # 20 a second got through ...
    limiter.on_throttle(clock.now)  # ... until it was empty again: 20/s is the grant
    assert limiter.rate == pytest.approx(20.0 * (1 - AdaptiveRate.MARGIN), rel=0.02)
    learned = limiter.learned()
    assert learned is not None and learned.measured
    assert learned.rate == pytest.approx(20.0, rel=0.02)
    # CUBIC: back at the grant after K seconds, then probing above it, slowly at first
    succeed(limiter, clock, 20.0, k_s(20.0))
    assert limiter.rate == pytest.approx(20.0, rel=0.03)
    succeed(limiter, clock, 20.0, probe_s(20.0) / 2)
    assert 20.0 < limiter.rate < 20.0 * (1 + AdaptiveRate.RESUME_ABOVE / 4)


@in_loop
def test_a_quota_that_grew_is_taken_in_seconds_not_along_the_curve() -> None:
    """A run that shared its quota measured its share; alone, it climbs to the whole quota by
    slow start once the probe runs ``RESUME_ABOVE`` over that share without a throttle."""
    clock = Clock()
    limiter = AdaptiveRate(20.0, 50.0, clock=clock)
    limiter.on_throttle(clock.now)
    succeed(limiter, clock, 8.0, 5.0)  # its share: 8 a second of a quota of 20
    limiter.on_throttle(clock.now)
    share_at = clock.now
    assert limiter.rate == pytest.approx(8.0 * (1 - AdaptiveRate.MARGIN), rel=0.05)
    # The neighbour is gone: nothing is throttled any more. Calls at the limiter's own rate.
    while limiter.rate < 20.0 and clock.now - share_at < 30.0:
        clock.now += 1 / limiter.rate
        limiter.on_success(clock.now)
    took = clock.now - share_at
    # Along CUBIC's curve alone, 8 -> 20 takes K + K * cbrt(1.5 / MARGIN), over 18 s; with the
    # concave half's C probing too, over 11 s.
    assert limiter.rate == 20.0
    assert took < k_s(8.0) + probe_s(8.0) + 2.0


def serve(limiter: AdaptiveRate, clock: Clock, quota: float, burst: float,
          seconds: float) -> tuple[int, int, float]:
    """Calls at the limiter's rate against a service's token bucket of ``quota`` a second and
    ``burst``, each answered at once; the calls made and throttled, and the highest rate the
    limiter reached after its first ten seconds."""
    tokens, made, throttled, highest = burst, 0, 0, 0.0
    start = clock.now
    while clock.now - start < seconds:
        step = 1 / limiter.rate
        clock.now += step
        tokens = min(burst, tokens + quota * step)
        made += 1
        if tokens >= 1:
            tokens -= 1
            limiter.on_success(clock.now)
        else:
            throttled += 1
            limiter.on_throttle(clock.now)
        if clock.now - start > 10.0:
            highest = max(highest, limiter.rate)
    return made, throttled, highest


@in_loop
@pytest.mark.parametrize("burst", [250.0, 50.0])
def test_a_run_at_the_edge_of_its_quota_never_goes_back_to_slow_start(burst: float) -> None:
    """Told five times its quota, with a proportional burst or not: at the edge a throttle
    comes within the probe, before it runs ``RESUME_ABOVE`` over the grant, so the rate never
    doubles into the quota again; one call in a hundred is throttled at most."""
    clock = Clock()
    limiter = AdaptiveRate(100.0, burst, clock=clock)
    made, throttled, highest = serve(limiter, clock, 20.0, 50.0, 300.0)
    assert highest < 20.0 * (1 + AdaptiveRate.RESUME_ABOVE)
    assert made / 300.0 > 0.97 * 20.0
    assert throttled / made <= 0.01


@in_loop
@pytest.mark.parametrize(("quota", "most"), [(2.0, 0.04), (5.0, 0.02), (20.0, 0.01)])
def test_at_a_low_quota_the_curve_is_timed_in_calls_and_throttles_stay_rare(
        quota: float, most: float) -> None:
    """A service's bucket refills by calls: at 2/s, two seconds of probing are four calls, and
    a curve timed in seconds alone throttled 7.8% of the calls of a run told five times its
    quota (3.1% at 5/s, 0.9% at 20/s). Around a measured grant timed in calls too: 3.2% and
    1.8%."""
    clock = Clock()
    limiter = AdaptiveRate(5 * quota, 2.5 * quota, clock=clock)
    made, throttled, _ = serve(limiter, clock, quota, 2.5 * quota, 300.0)
    assert throttled / made <= most
    assert made / 300.0 > 0.97 * quota


@in_loop
def test_at_a_low_grant_the_way_back_and_the_probe_take_calls_not_seconds() -> None:
    clock = Clock()
    grant = 2.0
    limiter = AdaptiveRate(10.0, 5.0, clock=clock, learned=Learned(grant, measured=True))
    k = k_s(grant)
    assert k > AdaptiveRate.K_MEASURED_S  # eight calls at 2/s: K_CALLS of them instead
    succeed(limiter, clock, grant, AdaptiveRate.K_MEASURED_S + AdaptiveRate.PROBE_S)
    assert limiter.rate < grant  # where a curve in seconds would be RESUME_ABOVE over it
    succeed(limiter, clock, grant, k - AdaptiveRate.K_MEASURED_S - AdaptiveRate.PROBE_S)
    assert limiter.rate == pytest.approx(grant, rel=0.01)
    succeed(limiter, clock, grant, 0.9 * probe_s(grant))
    assert grant < limiter.rate <= grant * (1 + AdaptiveRate.RESUME_ABOVE)
    succeed(limiter, clock, grant, 0.2 * probe_s(grant) + 1.0)
    assert limiter.rate > grant * (1 + AdaptiveRate.RESUME_ABOVE)  # the quota grew: slow start


def serve_runs(limiters: list[AdaptiveRate], clock: Clock, quota: float, burst: float,
               seconds: float, *, first_leaves_at: float | None = None,
               ) -> tuple[int, int, list[float]]:
    """Runs of one host on one service's token bucket, each calling at its limiter's rate, at a
    random point of each interval (``acquire``'s jitter), answered at once, and told every
    second of the others' rates (``share``, as ``Caller.share_quotas``): the calls made and
    throttled, and the calls that got through each second. With ``first_leaves_at`` the first
    run ends then."""
    rng = random.Random(7)
    start = clock.now
    slots = [start + index * 0.05 for index in range(len(limiters))]  # each interval's start
    due = list(slots)
    running = list(range(len(limiters)))
    tokens, last, made, throttled, beat = burst, start, 0, 0, start
    got = [0.0] * int(seconds)
    while True:
        index = min(running, key=due.__getitem__)
        clock.now = due[index]
        if clock.now - start >= seconds:
            return made, throttled, got
        if clock.now >= beat + 1.0:
            beat = clock.now
            if first_leaves_at is not None and 0 in running \
                    and clock.now - start >= first_leaves_at:
                running.remove(0)
            rates = {other: limiters[other].rate for other in running}
            for one in running:
                limiters[one].share(len(running), sum(rates.values()) - rates[one])
            continue
        tokens, last = min(burst, tokens + quota * (clock.now - last)), clock.now
        made += 1
        if tokens >= 1:
            tokens -= 1
            got[int(clock.now - start)] += 1
            limiters[index].on_success(clock.now)
        else:
            throttled += 1
            limiters[index].on_throttle(clock.now)
        rate = limiters[index].rate
        slots[index] += 1 / rate
        due[index] = max(slots[index], clock.now) + rng.uniform(0, AdaptiveRate.JITTER / rate)


@in_loop
@pytest.mark.parametrize(("quota", "most"), [(2.0, 0.05), (5.0, 0.04), (20.0, 0.03)])
def test_runs_of_one_host_told_of_each_other_share_a_quota_and_take_it_back_at_once(
        quota: float, most: float) -> None:
    """Two runs each told the quota, that know of each other from the second's first call:
    together they spend it with few throttles (at AWS's default of 2/s, two runs that found
    each other by throttles alone were throttled on 18-22% of their calls in the README's
    figures), evenly, and when one ends the other takes the whole quota within a second or
    two of being told."""
    clock = Clock()
    first = AdaptiveRate(quota, 2.5 * quota, clock=clock)
    succeed(first, clock, first.rate, 1.0)
    second = AdaptiveRate(quota, 2.5 * quota, clock=clock, runs=2, others=first.rate)
    assert second.rate == pytest.approx(first.rate / 2)
    first.share(2, 0.0)  # its next beat: a run came, whose rate it does not know yet
    assert first.rate == pytest.approx(second.rate)
    made, throttled, got = serve_runs([first, second], clock, quota, 2.5 * quota, 150.0,
                                      first_leaves_at=120.0)
    assert throttled / made <= most
    assert sum(got[10:120]) / 110 >= 0.9 * quota
    assert second.runs == 1
    assert sum(got[123:150]) / 27 >= 0.9 * quota
    # What the next run keeps is the whole quota, not the share it had
    learned = second.learned()
    assert learned is not None and learned.rate >= 0.9 * quota


@in_loop
def test_a_run_that_comes_takes_its_share_at_once_and_one_that_ends_leaves_it() -> None:
    clock = Clock()
    limiter = AdaptiveRate(100.0, 250.0, clock=clock, learned=Learned(20.0, measured=True))
    succeed(limiter, clock, 19.4, 2.0)
    before = limiter.rate
    limiter.share(2, 0.0)  # another run of this host spends the quota now: half of it
    share = before / 2
    assert limiter.rate == pytest.approx(share * (1 - AdaptiveRate.MARGIN))
    learned = limiter.learned()
    assert learned is not None and learned.rate == pytest.approx(before)  # the whole quota
    clock.now += AdaptiveRate.LATELY_S  # each run has had its beat since the other came
    limiter.share(2, share)  # shares even: nothing moves
    assert limiter.rate == pytest.approx(share * (1 - AdaptiveRate.MARGIN))
    even = (limiter.rate + 1.5 * share) / 2
    limiter.share(2, 1.5 * share)  # the other took more than its share: evened out
    assert limiter.rate == pytest.approx(even * (1 - AdaptiveRate.MARGIN))
    rate = limiter.rate
    limiter.share(1, 0.0)  # it ended: what it spent is this run's, without a probe for it
    assert limiter.rate == pytest.approx((rate + 1.5 * share) * (1 - AdaptiveRate.MARGIN))


@in_loop
def test_a_throttle_again_cuts_no_lower_than_what_got_through() -> None:
    """Two runs that start together on one quota are throttled in a row before either can
    measure a grant. A cut of BETA a throttle leaves the one throttled more often a fraction
    of the quota; a cut goes no lower than the rate that got through since the last one."""
    clock = Clock()
    limiter = AdaptiveRate(10.0, 50.0, clock=clock, learned=Learned(10.0, measured=False))
    limiter.on_throttle(clock.now)  # the first: nothing known of its share, BETA
    assert limiter.rate == pytest.approx(10.0 * AdaptiveRate.BETA)
    succeed(limiter, clock, 9.0, 1.0)  # 9 a second got through: too few to measure a grant
    before = limiter.rate
    assert limiter.learned() is None
    limiter.on_throttle(clock.now)
    held = 8.0  # since the cut (the call sent with the throttle is not counted)
    assert limiter.rate == pytest.approx(held * (1 - AdaptiveRate.MARGIN))
    assert limiter.rate > before * AdaptiveRate.BETA  # where a cut of BETA would leave it


@in_loop
def test_calls_sent_before_a_cut_do_not_cut_again() -> None:
    clock = Clock()
    limiter = AdaptiveRate(10.0, 5.0, clock=clock)
    sent = [clock.now] * 8
    clock.now += 0.1
    for at in sent:  # the calls in flight all come back throttled: one cut
        limiter.on_throttle(at)
    assert limiter.rate == pytest.approx(10.0 * AdaptiveRate.BETA)
    assert limiter.decreases == 1
    clock.now += 0.1
    limiter.on_throttle(clock.now - 0.05)  # sent after the cut: a new signal
    assert limiter.decreases == 2


@in_loop
def test_after_a_blind_cut_the_rate_is_back_within_k_seconds_never_above_the_ceiling() -> None:
    clock = Clock()
    limiter = AdaptiveRate(40.0, 5.0, clock=clock)
    succeed(limiter, clock, 20.0, 3.0)  # slow start: 10/s to the ceiling
    assert limiter.rate == 40.0
    limiter.on_throttle(clock.now)
    assert limiter.rate == pytest.approx(40.0 * AdaptiveRate.BETA)
    step = 0.05
    rates = []
    for _ in range(int(2 * AdaptiveRate.K_BLIND_S / step)):
        clock.now += step
        limiter.on_success(clock.now)
        rates.append(limiter.rate)
    back = rates[int(AdaptiveRate.K_BLIND_S / step) - 1]
    assert back == pytest.approx(40.0, rel=0.02)  # where it was cut, K seconds later
    assert rates == sorted(rates)  # concave up to it
    assert rates[-1] == 40.0


@in_loop
def test_slow_start_doubles_every_second_until_the_first_throttle_then_probes_above_half() -> None:
    clock = Clock()
    limiter = AdaptiveRate(1000.0, 5.0, clock=clock)
    assert limiter.rate == AdaptiveRate.START_RATE
    started, got = clock.now, 0
    while clock.now - started < 1.0:  # a second of calls at the limiter's own rate
        clock.now += 1 / limiter.rate
        limiter.on_success(clock.now)
        got += 1
    assert limiter.rate == pytest.approx(2 * AdaptiveRate.START_RATE, rel=0.1)
    assert got < 0.8 * limiter.rate  # the rate runs ahead of the calls that got through
    limiter.on_throttle(clock.now)
    halved = limiter.rate
    assert halved == pytest.approx(got * AdaptiveRate.SLOW_START_BETA, abs=0.6)
    # The rate that doubled into the throttle never held: the curve probes above the half that
    # did, back to slow start once it has held RESUME_ABOVE over it
    # (a blind cut: the curve is timed in seconds, to measure the grant soon)
    succeed(limiter, clock, 10.0, 0.9 * AdaptiveRate.PROBE_S)
    assert halved < limiter.rate <= halved * (1 + AdaptiveRate.RESUME_ABOVE)
    succeed(limiter, clock, 10.0, 0.2 * AdaptiveRate.PROBE_S + 1.0)
    assert limiter.rate > 1.5 * halved


@in_loop
def test_a_learned_grant_is_where_the_next_run_starts_never_above_the_ceiling() -> None:
    below = AdaptiveRate(100.0, 5.0, learned=Learned(20.0, measured=True), clock=Clock())
    assert below.rate == pytest.approx(20.0 * (1 - AdaptiveRate.MARGIN))
    capped = AdaptiveRate(10.0, 5.0, learned=Learned(20.0, measured=True), clock=Clock())
    assert capped.rate <= 10.0
    held = AdaptiveRate(100.0, 5.0, learned=Learned(50.0, measured=False), clock=Clock())
    assert held.rate == 50.0  # a rate that held: slow start goes on from there
    fixed = AdaptiveRate(10.0, 5.0, adaptive=False, learned=Learned(2.0, measured=True))
    assert fixed.rate == 10.0
    assert fixed.learned() is None


@in_loop
def test_successes_never_take_the_rate_past_the_ceiling() -> None:
    clock = Clock()
    limiter = AdaptiveRate(10.0, 5.0, clock=clock)
    limiter.on_throttle(clock.now)
    succeed(limiter, clock, 10.0, 30.0)
    assert limiter.rate == 10.0


@in_loop
def test_a_fixed_rate_does_not_move() -> None:
    clock = Clock()
    limiter = AdaptiveRate(10.0, 5.0, adaptive=False, clock=clock)
    limiter.on_throttle(limiter.now())
    limiter.on_success(limiter.now())
    assert limiter.rate == 10.0


@in_loop
def test_the_rate_is_never_cut_below_the_floor() -> None:
    clock = Clock()
    limiter = AdaptiveRate(10.0, 1.0, clock=clock)
    for _ in range(50):
        clock.now += 100
        limiter.on_throttle(clock.now)
    assert limiter.rate == pytest.approx(10.0 * AdaptiveRate.FLOOR_SHARE)


async def passed_within(limiter: AdaptiveRate, seconds: float) -> int:
    """How many calls the limiter lets through in ``seconds`` of real time."""
    passed = 0
    with anyio.move_on_after(seconds):
        while True:
            await limiter.acquire()
            passed += 1
    return passed


def test_after_a_cut_nothing_goes_faster_than_the_rate_whatever_the_burst() -> None:
    async def main() -> int:
        limiter = AdaptiveRate(100.0, 250.0, learned=Learned(100.0, measured=False))
        limiter.on_throttle(limiter.now())  # 100/s -> 70/s, the bucket emptied
        return await passed_within(limiter, 0.5)

    # 70/s for half a second; the 250-call burst is not let through
    assert 25 <= anyio.run(main) <= 40


def test_a_rising_rate_grows_the_bucket_without_making_tokens() -> None:
    async def main() -> int:
        clock = Clock()
        limiter = AdaptiveRate(200.0, 200.0, clock=clock)  # slow start: a bucket of 10
        for _ in range(10):
            await limiter.acquire()
        for _ in range(400):  # successes: slow start to the ceiling, a bucket of 200
            clock.now += 0.001
            limiter.on_success(clock.now)
        assert limiter.rate == 200.0
        return await passed_within(limiter, 0.1)

    # about 0.1 s at 200/s, not the 190 tokens a bigger bucket would have made at once
    assert anyio.run(main) <= 40


def test_the_bucket_lets_the_burst_through_less_one_held_back_then_waits() -> None:
    async def main() -> tuple[int, int]:
        limiter = AdaptiveRate(5.0, 4.0, adaptive=False)
        at_once = await passed_within(limiter, 0.1)
        return at_once, await passed_within(limiter, 0.5)

    # 3 of the burst of 4 at once (the service's bucket starts a latency later), then 5/s
    at_once, then = anyio.run(main)
    assert at_once == 3
    assert 2 <= then <= 4


def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    backoff = Backoff(base_s=0.5, cap_s=4.0)
    rng = random.Random(1)
    for attempt, cap in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)]:
        delays = [backoff.delay(attempt, rng) for _ in range(200)]
        assert min(delays) >= 0.0 and max(delays) <= cap
        assert max(delays) > cap * 0.8  # spread over the whole range, not a fixed step


def test_would_wait_says_whether_acquire_suspends() -> None:
    """The caller takes a free token without a cancel scope only when ``acquire`` cannot
    suspend: a token free, no fresh bucket to fill, no jitter to sleep."""

    async def body() -> None:
        limiter = AdaptiveRate(5.0, 2.0, adaptive=False)
        assert not limiter.would_wait()
        await limiter.acquire()
        await limiter.acquire()
        assert limiter.would_wait()  # the burst of 2 is spent
        with anyio.fail_after(1.0):
            await limiter.acquire()  # ... and acquire did wait for a token
        throttled = AdaptiveRate(5.0, 2.0)
        throttled.on_throttle(throttled.now())
        assert throttled.would_wait()  # a cut empties the bucket; paced calls jitter
        never = AdaptiveRate(5.0, 50.0, learned=Learned(5.0, measured=False))
        assert never.rate == never.ceiling and never.decreases == 0
        # At the ceiling and never throttled, with tokens to spare: paced calls jitter all
        # the same (a run that locks phases with the service's bucket starves a neighbour).
        assert never.would_wait()

    anyio.run(body)


def test_calls_leave_at_random_points_of_their_interval_before_any_throttle(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each acquire of an adaptive limiter, never throttled, sleeps a random share of the
    interval after its token, even a token that was free (a spy on the sleep); a fixed rate
    leaves on the token."""
    slept: dict[bool, list[float]] = {True: [], False: []}
    real_sleep = anyio.sleep
    adaptive = True

    async def spy(delay: float) -> None:
        slept[adaptive].append(delay)
        await real_sleep(0)

    monkeypatch.setattr(anyio, "sleep", spy)

    async def body() -> None:
        nonlocal adaptive
        for adaptive in (True, False):
            limiter = AdaptiveRate(20.0, 1000.0, adaptive=adaptive,
                                   learned=Learned(20.0, measured=False))
            for _ in range(20):
                await limiter.acquire()  # a burst of 1000: the token is free each time
            assert limiter.decreases == 0

    anyio.run(body)
    assert len(slept[True]) == 20 and len(set(slept[True])) == 20
    assert all(0.0 <= delay <= AdaptiveRate.JITTER / 20.0 for delay in slept[True])
    assert slept[False] == []
