"""Fault injection and counters of the sandbox: latency, server errors, dropped connections,
quotas (token buckets per operation, account and region), and the per-operation statistics
that ``GET /_sandbox/stats`` returns.

Everything here is shared by the server's request threads, so every mutable piece sits behind
a lock, and readers get copies.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

ALL_OPERATIONS = "*"


@dataclass(frozen=True, slots=True)
class Quota:
    """A token bucket: ``rate`` calls a second, at most ``burst`` at once."""

    rate: float
    burst: float

    @classmethod
    def parse(cls, text: str) -> tuple[str, Quota]:
        """Parse ``OPERATION=RATE[/BURST]`` (``*`` names every operation)."""
        operation, sep, spec = text.partition("=")
        operation = operation.strip()
        if not sep or not operation or not spec.strip():
            raise ValueError(f"quota {text!r} is not OPERATION=RATE[/BURST]")
        rate_text, _, burst_text = spec.partition("/")
        try:
            rate = float(rate_text)
            burst = float(burst_text) if burst_text else max(1.0, rate)
        except ValueError as exc:
            raise ValueError(f"quota {text!r}: RATE and BURST must be numbers") from exc
        if rate <= 0 or burst < 1:
            raise ValueError(f"quota {text!r}: RATE must be > 0 and BURST >= 1")
        return operation, cls(rate=rate, burst=burst)

    def to_text(self, operation: str) -> str:
        return f"{operation}={self.rate:g}/{self.burst:g}"


@dataclass(frozen=True, slots=True)
class Faults:
    """The fault knobs, as set on the command line or by ``POST /_sandbox/faults``."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    error_rate: float = 0.0
    drop_rate: float = 0.0
    quotas: dict[str, Quota] = field(default_factory=dict)
    #: operations every caller is refused (403 AccessDeniedException), or "*"
    deny: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for name in ("latency_ms", "jitter_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in ("error_rate", "drop_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")

    def updated(self, changes: dict[str, Any]) -> Faults:
        """A copy with the JSON ``changes`` applied; unknown keys are an error.

        ``quota`` (or ``quotas``) takes a list of ``OP=RATE[/BURST]`` strings, or a mapping of
        operation to a rate or ``{"rate", "burst"}``; it replaces the quotas, and an empty list
        or mapping removes them.
        """
        known = {"latency_ms", "jitter_ms", "error_rate", "drop_rate", "quota", "quotas", "deny"}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown fault setting(s): {', '.join(unknown)}")
        numbers = {}
        for name in ("latency_ms", "jitter_ms", "error_rate", "drop_rate"):
            if name in changes:
                value = changes[name]
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"{name} must be a number")
                numbers[name] = float(value)
        quotas = self.quotas
        for key in ("quota", "quotas"):
            if key in changes:
                quotas = parse_quotas(changes[key])
        deny = self.deny
        if "deny" in changes:
            if not isinstance(changes["deny"], list) or not all(
                    isinstance(op, str) for op in changes["deny"]):
                raise ValueError("deny must be a list of operation names")
            deny = frozenset(changes["deny"])
        return replace(self, quotas=quotas, deny=deny, **numbers)

    def to_json(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "jitter_ms": self.jitter_ms,
            "error_rate": self.error_rate,
            "drop_rate": self.drop_rate,
            "quota": [quota.to_text(op) for op, quota in sorted(self.quotas.items())],
            "deny": sorted(self.deny),
        }

    def quota_for(self, operation: str) -> Quota | None:
        return self.quotas.get(operation) or self.quotas.get(ALL_OPERATIONS)


def parse_quotas(value: Any) -> dict[str, Quota]:
    if isinstance(value, str):
        value = [value]
    quotas: dict[str, Quota] = {}
    if isinstance(value, list):
        for item in value:
            if not isinstance(item, str):
                raise ValueError("each quota must be a string OP=RATE[/BURST]")
            operation, quota = Quota.parse(item)
            quotas[operation] = quota
    elif isinstance(value, dict):
        for operation, spec in value.items():
            if isinstance(spec, dict):
                spec = f"{spec.get('rate')}/{spec.get('burst', max(1.0, spec.get('rate', 1)))}"
            operation, quota = Quota.parse(f"{operation}={spec}")
            quotas[operation] = quota
    else:
        raise ValueError("quota must be a list of OP=RATE[/BURST] or a mapping")
    return quotas


class TokenBucket:
    """Classic token bucket; ``take`` answers at once, it never waits."""

    def __init__(self, quota: Quota, *, clock: Any = time.monotonic) -> None:
        self.quota = quota
        self._clock = clock
        self._tokens = quota.burst
        self._updated = clock()

    def take(self) -> bool:
        now = self._clock()
        elapsed = now - self._updated
        self._updated = now
        self._tokens = min(self.quota.burst, self._tokens + elapsed * self.quota.rate)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class FaultInjector:
    """Decides, request by request, what the sandbox does to a call, and counts it."""

    COUNTERS = ("calls", "throttled", "errors", "dropped")
    #: the same per quota scope, "OPERATION ACCOUNT REGION" (a quota's bucket is per scope)
    BY_SCOPE = ("calls_by_scope", "throttled_by_scope")

    def __init__(self, faults: Faults, *, rng: random.Random | None = None) -> None:
        self._initial = faults
        self._faults = faults
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str, str], TokenBucket] = {}
        self._counters: dict[str, Counter[str]] = {
            name: Counter() for name in (*self.COUNTERS, *self.BY_SCOPE)}

    @property
    def faults(self) -> Faults:
        return self._faults

    def configure(self, changes: dict[str, Any]) -> Faults:
        with self._lock:
            self._faults = self._faults.updated(changes)
            # New quotas start with full buckets, as a quota change does on AWS's side.
            self._buckets.clear()
            return self._faults

    def reset(self) -> None:
        """Clear the counters and buckets and return to the start-up faults."""
        with self._lock:
            self._faults = self._initial
            self._buckets.clear()
            for counter in self._counters.values():
                counter.clear()

    def stats(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {name: dict(counter) for name, counter in self._counters.items()}

    def delay_s(self) -> float:
        faults = self._faults
        if not faults.latency_ms and not faults.jitter_ms:
            return 0.0
        with self._lock:
            jitter = self._rng.uniform(0.0, faults.jitter_ms)
        return (faults.latency_ms + jitter) / 1000.0

    def decide(self, operation: str, account: str, region: str) -> str:
        """Count the call and say what happens to it: ok, deny, throttle, drop or error."""
        with self._lock:
            faults = self._faults
            scope = f"{operation} {account} {region}"
            self._counters["calls"][operation] += 1
            self._counters["calls_by_scope"][scope] += 1
            if operation in faults.deny or ALL_OPERATIONS in faults.deny:
                self._counters["errors"][operation] += 1
                return "deny"
            quota = faults.quota_for(operation)
            if quota is not None:
                key = (operation, account, region)
                bucket = self._buckets.get(key)
                if bucket is None or bucket.quota != quota:
                    bucket = self._buckets[key] = TokenBucket(quota)
                if not bucket.take():
                    self._counters["throttled"][operation] += 1
                    self._counters["throttled_by_scope"][scope] += 1
                    return "throttle"
            if faults.drop_rate and self._rng.random() < faults.drop_rate:
                self._counters["dropped"][operation] += 1
                return "drop"
            if faults.error_rate and self._rng.random() < faults.error_rate:
                self._counters["errors"][operation] += 1
                return "error"
            return "ok"
