"""Kill -9 at every named moment of a run, then resume: nothing lost, nothing twice, no corrupt
file, and no successful call made again except those in flight at the kill."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.cli.world import seeded_input as world_input
from tests.conftest import Sandbox, run_cli

OP = "BatchGetFlowAssociation"
INSTANCES, PER_INSTANCE, CONCURRENCY = 3, 1000, 4
MINIMUM_CALLS = INSTANCES * PER_INSTANCE // 100
CRASH_POINTS = ["first-call", "wal-synced:5", "part-written:1", "wal-truncated:1",
                "checkpoint-written:2", "finalize-results", "finalized"]


def seeded_input(sandbox: Sandbox, path: Path) -> Path:
    return world_input(sandbox, path, instances=INSTANCES, per_instance=PER_INSTANCE, seed=11)


def run_with_crash(sandbox: Sandbox, input_csv: Path, out: Path, crash_at: str,
                   *extra: str, must_crash: bool = True) -> Path:
    result = run_cli(
        "run", "flow-associations", str(input_csv), "--endpoint-url", sandbox.url,
        "--out", str(out), "--run-id", "crash", "--rate", "40", "--burst", "10",
        "--concurrency", str(CONCURRENCY), *extra, CONNECT_BULK_CRASH_AT=crash_at,
    )
    # A late crash point (the 4th part of a run that writes 2) is never reached: no kill.
    allowed = (-9,) if must_crash else (-9, 0)
    assert result.returncode in allowed, (crash_at, result.returncode, result.stderr[-2000:])
    return out / "crash"


def check_complete(sandbox: Sandbox, run_dir: Path) -> dict[str, Any]:
    """The invariants after the run finished: every item exactly once, files readable."""
    for path in [*run_dir.glob("*.parquet"), *(run_dir / "parts").glob("*.parquet")]:
        pl.read_parquet(path)  # no corrupt file anywhere
    assert not list(run_dir.rglob(".*.tmp-*")), "a half-written file was left behind"
    results = pl.read_parquet(run_dir / "results.parquet")
    failures = pl.read_parquet(run_dir / "failures.parquet")
    assert failures.height == 0
    assert results.height == INSTANCES * PER_INSTANCE
    assert results.select(pl.struct("instance_id", "item_key").n_unique()).item() == \
        results.height, "an item was written twice"
    summary: dict[str, Any] = json.loads((run_dir / "summary.json").read_text())
    assert summary["state"] == "succeeded"
    assert (summary["items_succeeded"], summary["items_pending"]) == (results.height, 0)
    return summary


def successful_calls(sandbox: Sandbox) -> int:
    stats = sandbox.stats()
    return stats["calls"].get(OP, 0) - sum(stats[k].get(OP, 0)
                                           for k in ("throttled", "errors", "dropped"))


@pytest.mark.parametrize("crash_at", CRASH_POINTS)
def test_kill_at_each_moment_then_resume(sandbox: Sandbox, tmp_path: Path,
                                         crash_at: str) -> None:
    input_csv = seeded_input(sandbox, tmp_path / "in.csv")
    sandbox.faults(latency_ms=20)
    run_dir = run_with_crash(sandbox, input_csv, tmp_path / "out", crash_at)
    resumed = run_cli("resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    check_complete(sandbox, run_dir)
    calls = successful_calls(sandbox)
    assert MINIMUM_CALLS <= calls <= MINIMUM_CALLS + CONCURRENCY
    if crash_at == "first-call":
        assert calls == MINIMUM_CALLS  # killed before anything was sent


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    crash_at=st.sampled_from(CRASH_POINTS[1:]),
    nth=st.integers(min_value=1, max_value=4),
    error_rate=st.sampled_from([0.0, 0.1, 0.25]),
    drop_rate=st.sampled_from([0.0, 0.05]),
    quota=st.sampled_from([None, 10.0]),
)
def test_kills_under_fault_mixes_lose_nothing(
    sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory, crash_at: str, nth: int,
    error_rate: float, drop_rate: float, quota: float | None,
) -> None:
    sandbox.reset()
    tmp = tmp_path_factory.mktemp("crash")
    input_csv = seeded_input(sandbox, tmp / "in.csv")
    name = crash_at.split(":")[0]
    point = f"{name}:{nth}" if name.endswith(("synced", "written", "truncated")) else name
    sandbox.faults(latency_ms=10, error_rate=error_rate, drop_rate=drop_rate,
                   quota=[f"{OP}={quota}/5"] if quota else [])
    run_dir = run_with_crash(sandbox, input_csv, tmp / "out", point, "--max-attempts", "20",
                             must_crash=False)
    assert run_cli("resume", str(run_dir)).returncode == 0
    check_complete(sandbox, run_dir)
    assert successful_calls(sandbox) <= MINIMUM_CALLS + CONCURRENCY
