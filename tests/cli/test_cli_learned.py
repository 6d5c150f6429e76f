"""Learned rates (SPEC §9): a run keeps the rate it measured under a quota, and the next run
against the same quota starts from it, through the real CLI against the sandbox."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.cli.world import write_csv
from tests.conftest import Sandbox, run_cli

OP = "BatchGetFlowAssociation"
QUOTA = 8.0


def _numbers(sandbox: Sandbox, instances: int, per_instance: int) -> list[list[str]]:
    made = sandbox.seed(instances=instances, numbers_per_instance=per_instance, seed=3)
    connect = sandbox.client("connect")
    rows = []
    for instance in made["instances"]:
        pages = connect.get_paginator("list_phone_numbers_v2").paginate(
            InstanceId=instance["id"], PaginationConfig={"PageSize": 1000})
        rows += [[instance["arn"], n["PhoneNumberArn"]] for page in pages
                 for n in page["ListPhoneNumbersSummaryList"]]
    return rows


def _under_quota(sandbox: Sandbox, tmp_path: Path, instances: int) -> tuple[Path, list[list[str]]]:
    """An input of ``instances`` x 3000 numbers, and the quota (its bucket full) to learn."""
    rows = _numbers(sandbox, instances=instances, per_instance=3000)
    path = write_csv(tmp_path / "in.csv", ["instance_id", "phone_number"], rows)
    sandbox.faults(quota=[f"{OP}={QUOTA:g}/{2 * QUOTA:g}"])
    return path, rows


def _run(sandbox: Sandbox, path: Path, out: Path, run_id: str, *args: str,
         rate: float = 5 * QUOTA) -> dict[str, Any]:
    result = run_cli("run", "flow-associations", str(path), "--endpoint-url", sandbox.url,
                     "--out", str(out), "--run-id", run_id, "--rate", f"{rate:g}",
                     "--no-flow-names", "--log-format", "json", *args)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    summary: dict[str, Any] = json.loads((out / run_id / "summary.json").read_text())
    return summary | {"stderr": result.stderr}


def _events(run: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in run["stderr"].splitlines() if f'"{name}"' in line]


def _starts(run: dict[str, Any]) -> dict[str, float]:
    """The rate each operation started from, where an earlier run's was used."""
    return {e["operation"]: e["rate"] for e in _events(run, "rate_from_last_run")}


def test_the_next_run_starts_from_the_rate_the_last_one_learned(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    # Calls enough (150) for two throttles at least 20 successes apart: a measured grant. A run
    # that settles under the quota is throttled again only when its probe goes back to slow
    # start, some seconds on; 90 calls ended first in two runs of five.
    path, rows = _under_quota(sandbox, tmp_path, instances=5)
    state = tmp_path / "state"
    first = _run(sandbox, path, tmp_path / "out", "first", "--state-dir", str(state))
    kept = json.loads((state / "learned-rates.json").read_text())["rates"]
    (name, entry), = ((k, v) for k, v in kept.items() if OP in k)
    assert name.startswith(sandbox.url) and name.endswith("us-east-1")
    assert entry["measured"] and abs(entry["rate"] - QUOTA) < 0.2 * QUOTA, entry

    sandbox.faults(quota=[f"{OP}={QUOTA:g}/{2 * QUOTA:g}"])  # a full bucket, as at first
    second = _run(sandbox, path, tmp_path / "out", "second", "--state-dir", str(state))
    throttled = [run["calls"][OP]["throttled"] for run in (first, second)]
    assert throttled[0] > 0  # the first run had to find the quota ...
    assert throttled[1] <= throttled[0]  # ... the second started from it
    assert second["items_succeeded"] == first["items_succeeded"] == 15000
    assert _starts(first) == {}
    assert abs(_starts(second)[OP] - 0.97 * entry["rate"]) < 0.01 * QUOTA

    # never above --rate: a run told less starts at what it was told
    small = write_csv(tmp_path / "small.csv", ["instance_id", "phone_number"],
                      rows[:200])
    third = _run(sandbox, small, tmp_path / "out", "third", "--state-dir", str(state),
                 rate=QUOTA / 2)
    assert _starts(third)[OP] <= QUOTA / 2


def test_a_state_file_that_cannot_be_read_starts_from_scratch_and_is_written_anew(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    path, _ = _under_quota(sandbox, tmp_path, instances=3)  # long enough to measure a grant
    state = tmp_path / "state"
    state.mkdir()
    (state / "learned-rates.json").write_text('{"rates": {"x": ')  # torn by a full disk
    run = _run(sandbox, path, tmp_path / "out", "r", "--state-dir", str(state))
    assert run["state"] == "succeeded"
    assert _starts(run) == {}
    kept = json.loads((state / "learned-rates.json").read_text())["rates"]
    assert any(OP in name for name in kept)


def test_a_state_dir_that_cannot_be_written_is_a_warning_not_a_failed_run(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    path, _ = _under_quota(sandbox, tmp_path, instances=3)  # a grant to measure and keep
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    run = _run(sandbox, path, tmp_path / "out", "r", "--state-dir", str(blocked / "state"))
    assert run["state"] == "succeeded"
    warnings = _events(run, "state_not_kept")
    assert len(warnings) == 1
    assert "learned rates not kept" in warnings[0]["message"]
    # Nor can the runs of this host share their quotas there: said once, throttles find them
    unshared = _events(run, "quotas_not_shared")
    assert len(unshared) == 1
    assert "runs of this host cannot share their quotas" in unshared[0]["message"]
