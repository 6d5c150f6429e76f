"""The adaptive limiter and the backoff, with a fake clock."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable

import anyio
import pytest
from connect_bulk.pipeline.limits import AdaptiveRate, Backoff


def in_loop(test: Callable[[], None]) -> Callable[[], None]:
    """Run a sync test body inside an event loop (aiolimiter reads the loop's clock)."""

    @functools.wraps(test)
    def wrapper() -> None:
        async def body() -> None:
            test()

        anyio.run(body)

    return wrapper


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@in_loop
def test_a_throttle_cuts_the_rate_once_per_round_of_calls_in_flight() -> None:
    clock = Clock()
    limiter = AdaptiveRate(10.0, 5.0, clock=clock)
    sent = [clock.now] * 8
    clock.now += 0.1
    for at in sent:  # the calls in flight all come back throttled: one cut
        limiter.on_throttle(at)
    assert limiter.rate == pytest.approx(10.0 * AdaptiveRate.DECREASE)
    clock.now += 0.1
    limiter.on_throttle(clock.now - 0.05)  # sent after the cut: a new signal
    assert limiter.rate == pytest.approx(10.0 * AdaptiveRate.DECREASE**2)
    assert limiter.statistics().decreases == 2


@in_loop
def test_a_cut_goes_to_what_the_service_granted() -> None:
    clock = Clock()
    limiter = AdaptiveRate(100.0, 5.0, clock=clock)
    for _ in range(40):  # 20 successes a second for two seconds
        clock.now += 0.05
        limiter.on_success()
    limiter.on_throttle(clock.now)
    assert limiter.rate == pytest.approx(20.0 * AdaptiveRate.BELOW_MEASURED, rel=0.05)


@in_loop
def test_successes_recover_towards_the_ceiling_and_never_past_it() -> None:
    clock = Clock()
    limiter = AdaptiveRate(10.0, 5.0, clock=clock)
    limiter.on_throttle(limiter.now())
    rates = []
    for _ in range(200):
        limiter.on_success()
        rates.append(limiter.rate)
    assert rates == sorted(rates)
    assert rates[-1] == 10.0
    assert max(rates) <= 10.0


@in_loop
def test_slow_start_doubles_until_the_first_throttle() -> None:
    clock = Clock()
    limiter = AdaptiveRate(100.0, 5.0, clock=clock)
    assert limiter.rate == 10.0  # twice the burst
    for _ in range(10):
        limiter.on_success()
    assert limiter.rate == 20.0  # a second of successes at 10/s: doubled
    clock.now += 1
    limiter.on_throttle(clock.now)
    rate = limiter.rate
    for _ in range(10):
        limiter.on_success()
    assert limiter.rate == pytest.approx(rate + 10 * AdaptiveRate.INCREASE_PER_S)


@in_loop
def test_a_fixed_rate_does_not_move() -> None:
    limiter = AdaptiveRate(10.0, 5.0, adaptive=False, clock=Clock())
    limiter.on_throttle(limiter.now())
    limiter.on_success()
    assert limiter.rate == 10.0


@in_loop
def test_the_rate_is_never_cut_below_the_floor() -> None:
    clock = Clock()
    limiter = AdaptiveRate(10.0, 1.0, clock=clock)
    for _ in range(50):
        clock.now += 100
        limiter.on_throttle(clock.now)
    assert limiter.rate == pytest.approx(10.0 * AdaptiveRate.FLOOR_SHARE)


def test_a_cut_paces_at_the_new_rate_and_keeps_what_the_bucket_held() -> None:
    async def main() -> tuple[int, int]:
        limiter = AdaptiveRate(20.0, 4.0, adaptive=True)
        for _ in range(4):  # the burst: the bucket is full
            await limiter.acquire()
        limiter.on_throttle(limiter.now())
        limiter.on_throttle(limiter.now() + 1)  # two cuts: 8/s -> 4/s -> 2/s
        assert limiter.rate == pytest.approx(2.0)
        passed = 0
        with anyio.move_on_after(1.05):
            while True:
                await limiter.acquire()
                passed += 1
        return passed, int(limiter.statistics().decreases)

    passed, decreases = anyio.run(main)
    # A full bucket carried over lets nothing through at once; then 2 a second.
    assert decreases == 2
    assert 1 <= passed <= 3


def test_the_bucket_lets_the_burst_through_then_waits() -> None:
    async def main() -> int:
        limiter = AdaptiveRate(1.0, 3.0)
        passed = 0
        with anyio.move_on_after(0.3):
            while True:
                await limiter.acquire()
                passed += 1
        return passed

    assert anyio.run(main) == 3


def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    backoff = Backoff(base_s=0.5, cap_s=4.0)
    rng = random.Random(1)
    for attempt, cap in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)]:
        delays = [backoff.delay(attempt, rng) for _ in range(200)]
        assert min(delays) >= 0.0 and max(delays) <= cap
        assert max(delays) > cap * 0.8  # spread over the whole range, not a fixed step
