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


def _run(sandbox: Sandbox, path: Path, out: Path, run_id: str, *args: str) -> dict[str, Any]:
    result = run_cli("run", "flow-associations", str(path), "--endpoint-url", sandbox.url,
                     "--out", str(out), "--run-id", run_id, "--rate", str(5 * QUOTA),
                     "--no-flow-names", "--log-format", "json", *args)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    summary: dict[str, Any] = json.loads((out / run_id / "summary.json").read_text())
    return summary | {"stderr": result.stderr}


def test_the_next_run_starts_from_the_rate_the_last_one_learned(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "in.csv", ["instance_id", "phone_number"],
                     _numbers(sandbox, instances=2, per_instance=3000))
    sandbox.faults(quota=[f"{OP}={QUOTA:g}/{2 * QUOTA:g}"])
    state = tmp_path / "state"
    first = _run(sandbox, path, tmp_path / "out", "first", "--state-dir", str(state))
    kept = json.loads((state / "learned-rates.json").read_text())["rates"]
    (name, entry), = ((k, v) for k, v in kept.items() if OP in k)
    assert name.startswith(sandbox.url) and name.endswith("us-east-1")
    assert entry["measured"] and abs(entry["rate"] - QUOTA) < 0.2 * QUOTA

    sandbox.faults(quota=[f"{OP}={QUOTA:g}/{2 * QUOTA:g}"])  # a full bucket, as at first
    second = _run(sandbox, path, tmp_path / "out", "second", "--state-dir", str(state))
    throttled = [run["calls"][OP]["throttled"] for run in (first, second)]
    assert throttled[0] > 0  # the first run had to find the quota ...
    assert throttled[1] <= throttled[0]  # ... the second started from it
    assert second["items_succeeded"] == first["items_succeeded"] == 6000


def test_a_state_dir_that_cannot_be_written_is_a_warning_not_a_failed_run(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "in.csv", ["instance_id", "phone_number"],
                     _numbers(sandbox, instances=1, per_instance=200))
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    run = _run(sandbox, path, tmp_path / "out", "r", "--state-dir", str(blocked / "state"))
    assert run["state"] == "succeeded"
    warnings = [json.loads(line) for line in run["stderr"].splitlines()
                if '"state_not_kept"' in line]
    assert len(warnings) == 1
    assert "learned rates not kept" in warnings[0]["message"]
