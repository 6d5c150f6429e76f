"""Stopping and continuing: deadline, signals, kill -9, the lock, the failure-rate abort, and
the commands that look at a run (status, plan, jobs)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from connect_bulk.pipeline.rundir import RunDir

from tests.cli.world import World, build_world, read, write_csv
from tests.conftest import Sandbox, cli_env, run_cli

OP = "BatchGetFlowAssociation"
SUMMARY_KEYS = {"run_id", "job", "state", "rows_total", "rows_rejected", "rows_duplicate",
                "items_total", "items_succeeded", "items_failed", "items_pending", "calls",
                "started_at", "finished_at", "elapsed_s"}


@pytest.fixture
def world(sandbox: Sandbox) -> World:
    # 6 instances x 20 numbers: 6 calls, so a slow --rate makes runs we can stop halfway.
    return build_world(sandbox, instances=6, numbers_per_instance=20)


@pytest.fixture
def input_csv(world: World, tmp_path: Path) -> Path:
    arns = {i["Id"]: i["Arn"] for i in world.instances}
    return write_csv(tmp_path / "in.csv", ["instance_id", "phone_number"],
                     [[arns[n.instance_id], n.id] for n in world.numbers])


def _args(sandbox: Sandbox, input_csv: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "flow-associations", str(input_csv), "--endpoint-url", sandbox.url,
            "--out", str(out), "--run-id", "r1", *extra]


def _unique_results(run_dir: Path) -> int:
    results = read(run_dir / "results.parquet")
    unique = results.select(pl.struct("instance_id", "item_key").n_unique()).item()
    assert unique == results.height, "an item was written twice"
    return int(results.height)


def test_deadline_stops_with_exit_4_and_resume_finishes(
    sandbox: Sandbox, input_csv: Path, tmp_path: Path
) -> None:
    result = run_cli(*_args(sandbox, input_csv, tmp_path / "out", "--rate", "1", "--burst", "1",
                            "--concurrency", "1", "--deadline", "2s"))
    assert result.returncode == 4, result.stderr
    run_dir = tmp_path / "out" / "r1"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["state"] == "deadline"
    assert 0 < summary["items_pending"] < 120
    resumed = run_cli("resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    assert _unique_results(run_dir) == 120
    assert sandbox.stats()["calls"][OP] == 6  # nothing asked twice


def _start(sandbox: Sandbox, input_csv: Path, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "connect_bulk.pipeline",
         *_args(sandbox, input_csv, out, "--rate", "1", "--burst", "1", "--concurrency", "1")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        text=True, env=cli_env(),
    )


def test_sigint_writes_what_was_answered_exits_130_and_resume_finishes(
    sandbox: Sandbox, input_csv: Path, tmp_path: Path
) -> None:
    process = _start(sandbox, input_csv, tmp_path / "out")
    sandbox.wait_for_calls(OP, 2)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 130
    run_dir = tmp_path / "out" / "r1"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["state"] == "interrupted"
    assert summary["items_succeeded"] >= 40  # the two answered calls were written
    assert run_cli("resume", str(run_dir)).returncode == 0
    assert _unique_results(run_dir) == 120
    assert sandbox.stats()["calls"][OP] == 6


def test_kill_9_then_resume_loses_nothing_and_repeats_at_most_the_calls_in_flight(
    sandbox: Sandbox, input_csv: Path, tmp_path: Path
) -> None:
    process = _start(sandbox, input_csv, tmp_path / "out")
    sandbox.wait_for_calls(OP, 3)
    process.kill()
    process.wait(timeout=30)
    run_dir = tmp_path / "out" / "r1"
    status = json.loads(run_cli("status", "--json", str(run_dir)).stdout)
    assert status["state"] == "interrupted"  # summary said running; nobody holds the lock
    assert run_cli("resume", str(run_dir)).returncode == 0
    assert _unique_results(run_dir) == 120
    assert 6 <= sandbox.stats()["calls"][OP] <= 6 + 1  # --concurrency 1: one call in flight


def test_a_locked_run_exits_75_and_a_dead_holders_lock_is_taken_over(
    sandbox: Sandbox, input_csv: Path, tmp_path: Path
) -> None:
    assert run_cli(*_args(sandbox, input_csv, tmp_path / "out", "--deadline", "0s")
                   ).returncode == 4
    run_dir = tmp_path / "out" / "r1"
    holder = RunDir(run_dir)
    holder.lock()
    try:
        locked = run_cli("resume", "--log-format", "text", str(run_dir))
        assert locked.returncode == 75
        assert "in use by pid" in locked.stderr
    finally:
        holder.unlock()
    # A lock file left behind by a process that died holds nothing.
    (run_dir / "lock").write_text("pid 999999 on elsewhere\n")
    assert run_cli("resume", str(run_dir)).returncode == 0


def test_max_failure_rate_aborts_with_exit_3(sandbox: Sandbox, tmp_path: Path) -> None:
    world = build_world(sandbox, instances=1, numbers_per_instance=300)
    arn = world.instances[0]["Arn"]
    path = write_csv(tmp_path / "in.csv", ["instance_id", "phone_number"],
                     [[arn, n.id] for n in world.numbers])
    sandbox.faults(error_rate=1.0)
    result = run_cli(*_args(sandbox, path, tmp_path / "out", "--max-attempts", "1",
                            "--concurrency", "1", "--max-failure-rate", "0.5"))
    assert result.returncode == 3
    summary = json.loads((tmp_path / "out" / "r1" / "summary.json").read_text())
    assert summary["state"] == "aborted"
    assert (summary["items_failed"], summary["items_pending"]) == (200, 100)


def test_status_and_plan_json_have_the_contracts_keys(
    sandbox: Sandbox, input_csv: Path, tmp_path: Path
) -> None:
    planned = run_cli("plan", "flow-associations", str(input_csv), "--json", "--rate", "2")
    assert planned.returncode == 0, planned.stderr
    report = json.loads(planned.stdout)
    assert {"rows_total", "rows_rejected", "rows_duplicate", "items_total", "calls",
            "estimated_s"} <= set(report)
    # a flow listing and the instance's alias, per instance
    assert report["calls"] == {OP: 6, "ListContactFlows": 6, "DescribeInstance": 6}
    assert report["items_total"] == 120
    before = sandbox.stats()["calls"]
    assert OP not in before and "GetCallerIdentity" not in before  # plan calls nothing
    text = run_cli("plan", "flow-associations", str(input_csv))
    assert "calls BatchGetFlowAssociation: 6" in text.stdout

    assert run_cli(*_args(sandbox, input_csv, tmp_path / "out", "--rate", "20")).returncode == 0
    status = run_cli("status", "--json", str(tmp_path / "out" / "r1"))
    assert set(json.loads(status.stdout)) >= SUMMARY_KEYS
    text = run_cli("status", str(tmp_path / "out" / "r1"))
    assert "succeeded" in text.stdout and "120 succeeded" in text.stdout


def test_jobs_lists_columns_and_options() -> None:
    result = run_cli("jobs")
    assert result.returncode == 0
    assert "flow-associations" in result.stdout
    assert "column phone_number" in result.stdout
    assert "--resource-type" in result.stdout
