"""`connect-bulk show`: a run's outputs as a table for people, CSV or JSON lines otherwise."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from tests.cli.world import build_world, write_csv
from tests.conftest import Sandbox, run_cli

UNKNOWN = "00000000-0000-4000-8000-0000000000{:02d}"


@pytest.fixture
def run_dir(sandbox: Sandbox, tmp_path: Path) -> Path:
    """12 numbers found, 3 not claimed in the instance (failures), 1 bad row (reject)."""
    world = build_world(sandbox, instances=1, numbers_per_instance=12)
    arn = world.instances[0]["Arn"]
    rows = [[arn, n.id] for n in world.numbers]
    rows += [[arn, UNKNOWN.format(i)] for i in range(3)]
    rows += [[arn, "=HYPERLINK(\"x\")"]]
    path = write_csv(tmp_path / "in.csv", ["instance_id", "phone_number"], rows)
    result = run_cli("run", "flow-associations", str(path), "--endpoint-url", sandbox.url,
                     "--out", str(tmp_path / "out"), "--run-id", "r")
    assert result.returncode == 1, result.stderr
    return tmp_path / "out" / "r"


def test_show_prints_failures_first_as_csv_off_a_tty(run_dir: Path) -> None:
    result = run_cli("show", str(run_dir))
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 3
    assert {r["error_code"] for r in rows} == {"ResourceNotFoundException"}
    assert {r["retryable"] for r in rows} == {"false"}

    results = list(csv.DictReader(io.StringIO(run_cli("show", str(run_dir), "results").stdout)))
    assert len(results) == 12
    assert results[0]["completed_at"].endswith("Z")

    rejects = run_cli("show", str(run_dir), "rejects").stdout
    assert "'=HYPERLINK" in rejects  # a formula is made inert for spreadsheets


def test_show_json_lines_and_limit(run_dir: Path) -> None:
    result = run_cli("show", str(run_dir), "results", "--format", "json", "--limit", "5")
    lines = result.stdout.splitlines()
    assert len(lines) == 5
    assert {"phone_number_id", "flow_id", "associated"} <= set(json.loads(lines[0]))


def test_show_table_groups_failures_by_code_with_a_count_and_an_example(run_dir: Path) -> None:
    result = run_cli("show", str(run_dir), "failures", "--format", "table", COLUMNS="160")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "failures by error code (3 items)" in text
    group = next(line for line in text.splitlines() if "ResourceNotFoundException" in line)
    assert "│ 3 " in group.replace("  ", " ") or " 3 │" in group
    assert UNKNOWN.format(0) in text
    assert "failures: 3 rows" in text


def test_show_says_what_is_missing_in_one_line(run_dir: Path, tmp_path: Path) -> None:
    result = run_cli("show", str(run_dir), "rollback")
    assert result.returncode == 2
    assert "this run's job writes none" in json.loads(result.stderr)["message"]
    assert run_cli("show", str(tmp_path / "nowhere")).returncode == 2
