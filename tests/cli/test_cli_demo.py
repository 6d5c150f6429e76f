"""`connect-bulk demo`: the quick start's first command, end to end."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import polars as pl

from tests.cli.world import read
from tests.conftest import CLI, cli_env


def _kind(run_json: Path) -> str:
    run = json.loads(run_json.read_text())
    for suffix in ("-dry-run", "-rollback"):
        if run["run_id"].endswith(suffix):
            return run["job"] + suffix
    return str(run["job"])


def test_demo_runs_every_job_and_a_rollback_on_its_own_sandbox(tmp_path: Path) -> None:
    result = subprocess.run(
        [*CLI, "demo", "--rows", "60", "--log-format", "text"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=cli_env(),
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {_kind(p): p.parent for p in (tmp_path / "data" / "runs").glob("*/run.json")}
    assert set(runs) == {"flow-associations", "campaign-onboarding", "associate-flows",
                         "associate-flows-dry-run", "associate-flows-rollback"}
    flows = json.loads((runs["flow-associations"] / "summary.json").read_text())
    # 60 numbers by ID or ARN and one written as E.164; 3 listed under the wrong instance;
    # 3 bad rows: as the demo says.
    assert (flows["items_succeeded"], flows["items_failed"], flows["rows_rejected"]) == (61, 3, 3)
    onboarding = read(runs["campaign-onboarding"] / "results.parquet")
    assert set(onboarding["status"]) == {"SUCCEEDED"} and onboarding.height == 2
    failures = read(runs["campaign-onboarding"] / "failures.parquet")
    assert failures["error_code"].to_list() == ["KMS_KEY_NOT_FOUND"]
    # The migration: 20 numbers to "Support", predicted by the dry run, undone by the rollback.
    migrated = read(runs["associate-flows"] / "results.parquet")
    assert migrated.height == 20 and set(migrated["flow_name"]) == {"Support"}
    predicted = read(runs["associate-flows-dry-run"] / "results.parquet")
    changed = migrated.filter(pl.col("outcome") == "associated").height
    assert predicted.filter(pl.col("outcome") == "would_associate").height == changed
    assert read(runs["associate-flows-rollback"] / "results.parquet").height == changed
    assert "what changed (flow before -> after)" in result.stderr
    assert "jupyter lab notebooks/" in result.stderr
