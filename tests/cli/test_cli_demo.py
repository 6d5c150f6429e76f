"""`connect-bulk demo`: the quick start's first command, end to end."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.cli.world import read
from tests.conftest import CLI, cli_env


def test_demo_runs_both_jobs_on_its_own_sandbox(tmp_path: Path) -> None:
    result = subprocess.run(
        [*CLI, "demo", "--rows", "60", "--log-format", "text"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=cli_env(),
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {json.loads(p.read_text())["job"]: p.parent
            for p in (tmp_path / "data" / "runs").glob("*/run.json")}
    assert set(runs) == {"flow-associations", "campaign-onboarding"}
    flows = json.loads((runs["flow-associations"] / "summary.json").read_text())
    # 60 numbers by ID or ARN and one written as E.164; 3 listed under the wrong instance;
    # 3 bad rows: as the demo says.
    assert (flows["items_succeeded"], flows["items_failed"], flows["rows_rejected"]) == (61, 3, 3)
    onboarding = read(runs["campaign-onboarding"] / "results.parquet")
    assert set(onboarding["status"]) == {"SUCCEEDED"} and onboarding.height == 2
    failures = read(runs["campaign-onboarding"] / "failures.parquet")
    assert failures["error_code"].to_list() == ["KMS_KEY_NOT_FOUND"]
    assert "jupyter lab notebooks/" in result.stderr
