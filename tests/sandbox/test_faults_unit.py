"""Unit tests of the sandbox's fault pieces, with a fake clock and a seeded random source."""

from __future__ import annotations

import random

import pytest
from connect_bulk.pipeline.sandbox.faults import FaultInjector, Faults, Quota, TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("text", "operation", "rate", "burst"),
    [("BatchGetFlowAssociation=20", "BatchGetFlowAssociation", 20, 20),
     ("*=2/5", "*", 2, 5), ("X=0.5", "X", 0.5, 1)],
)
def test_quota_parse(text: str, operation: str, rate: float, burst: float) -> None:
    assert Quota.parse(text) == (operation, Quota(rate, burst))


@pytest.mark.parametrize("text", ["X", "=2", "X=", "X=a", "X=0", "X=2/0.5", "X=-1"])
def test_quota_parse_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="quota"):
        Quota.parse(text)


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(Quota(rate=2, burst=3), clock=clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    clock.now += 0.5  # one token at 2/s
    assert [bucket.take(), bucket.take()] == [True, False]
    clock.now += 100  # refills only to the burst
    assert sum(bucket.take() for _ in range(10)) == 3


def test_faults_updated_validates_and_replaces_quotas() -> None:
    faults = Faults(quotas={"A": Quota(1, 1)})
    updated = faults.updated({"error_rate": 0.5, "quota": ["B=3/4"]})
    assert updated.error_rate == 0.5
    assert updated.quotas == {"B": Quota(3, 4)}
    assert faults.updated({"quota": []}).quotas == {}
    for bad in ({"error_rate": "x"}, {"drop_rate": 1.5}, {"jitter_ms": -2}, {"what": 1},
                {"error_rate": True}):
        with pytest.raises(ValueError):
            faults.updated(bad)


def test_a_named_quota_wins_over_star() -> None:
    faults = Faults(quotas={"*": Quota(1, 1), "A": Quota(9, 9)})
    assert faults.quota_for("A") == Quota(9, 9)
    assert faults.quota_for("B") == Quota(1, 1)


def test_injector_counts_each_verdict_per_operation_and_bucket() -> None:
    injector = FaultInjector(Faults(quotas={"A": Quota(0.001, 1)}), rng=random.Random(1))
    verdicts = [injector.decide("A", "111111111111", "us-east-1") for _ in range(3)]
    assert verdicts == ["ok", "throttle", "throttle"]
    # Another account has its own bucket.
    assert injector.decide("A", "222222222222", "us-east-1") == "ok"
    injector.configure({"error_rate": 1.0, "quota": []})
    assert injector.decide("B", "111111111111", "us-east-1") == "error"
    assert injector.stats() == {
        "calls": {"A": 4, "B": 1}, "throttled": {"A": 2}, "errors": {"B": 1}, "dropped": {},
        # per quota scope too: each (operation, account, region) has a bucket of its own
        "calls_by_scope": {"A 111111111111 us-east-1": 3, "A 222222222222 us-east-1": 1,
                           "B 111111111111 us-east-1": 1},
        "throttled_by_scope": {"A 111111111111 us-east-1": 2},
    }
    injector.reset()
    assert injector.faults == Faults(quotas={"A": Quota(0.001, 1)})
    assert injector.stats()["calls"] == {}
