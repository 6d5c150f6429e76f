"""`connect-bulk run campaign-onboarding`, through the real CLI against the sandbox (whose
onboarding jobs take 0.5 s here)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cli.world import read, write_csv
from tests.conftest import CLI, Sandbox, cli_env, run_cli

START = "StartInstanceOnboardingJob"
MISSING_KEY = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-4000-8000-00000000dead"


def _instances(sandbox: Sandbox, n: int) -> list[dict[str, str]]:
    connect = sandbox.client("connect")
    return [
        {k: v for k, v in connect.create_instance(
            IdentityManagementType="CONNECT_MANAGED", InstanceAlias=f"c{i}",
            InboundCallsEnabled=True, OutboundCallsEnabled=True).items() if k in ("Id", "Arn")}
        for i in range(n)
    ]


def _key(sandbox: Sandbox) -> str:
    return str(sandbox.client("kms").create_key()["KeyMetadata"]["Arn"])


def _run(sandbox: Sandbox, path: Path, out: Path, *args: str, run_id: str = "c1",
         yes: bool = True) -> tuple[int, dict[str, Any], Path]:
    result = run_cli(
        "run", "campaign-onboarding", str(path), "--endpoint-url", sandbox.url,
        "--region", "us-east-1", "--out", str(out), "--run-id", run_id, "--rate", "50",
        *(["--yes"] if yes else []), *args,
    )
    assert "Traceback" not in result.stderr, result.stderr
    run_dir = out / run_id
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return result.returncode, summary, run_dir


def _by_instance(run_dir: Path, name: str) -> dict[str, dict[str, Any]]:
    return {row["instance_id"]: row for row in read(run_dir / name).iter_rows(named=True)}


def test_keys_per_row_and_by_default_missing_keys_unknown_instances_and_bad_rows(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    a, b, c, d = _instances(sandbox, 4)
    row_key, default_key = _key(sandbox), _key(sandbox)
    unknown = "00000000-0000-4000-8000-00000000beef"
    path = write_csv(tmp_path / "in.csv", ["Instance ARN", "KMS Key ARN"], [
        [a["Arn"], row_key],
        [b["Id"], ""],               # the default key
        [c["Id"], MISSING_KEY],      # a key KMS does not have
        [unknown, ""],               # no such instance
        [a["Id"], row_key],          # duplicate of row 1 (ID and ARN are one instance)
        ["i-nope", row_key],         # bad instance
        [d["Id"], "alias/not-an-arn"],  # bad key
    ])
    code, summary, run_dir = _run(sandbox, path, tmp_path / "out", "--kms-key-arn",
                                  default_key)
    assert code == 1
    results = _by_instance(run_dir, "results.parquet")
    assert set(results) == {a["Id"], b["Id"]}
    assert (results[a["Id"]]["kms_key_arn"], results[b["Id"]]["kms_key_arn"]) == (
        row_key, default_key)
    assert all(r["status"] == "SUCCEEDED" and r["outcome"] == "started"
               and r["encryption_enabled"] for r in results.values())
    failures = _by_instance(run_dir, "failures.parquet")
    assert failures[c["Id"]]["error_code"] == "KMS_KEY_NOT_FOUND"
    assert failures[c["Id"]]["retryable"] is False
    assert (failures[unknown]["error_code"], failures[unknown]["http_status"]) == (
        "ResourceNotFoundException", 404)
    rejects = read(run_dir / "rejects.parquet")
    assert rejects["input_row"].to_list() == [6, 7]
    assert "'i-nope' is not an instance ID" in rejects["reason"][0]
    assert "'alias/not-an-arn' is not a KMS key ARN" in rejects["reason"][1]
    assert (summary["rows_total"], summary["items_total"], summary["rows_duplicate"],
            summary["rows_rejected"]) == (7, 4, 1, 2)
    # a, b, c, and the unknown instance: only its start can tell it does not exist (the
    # look-ups answer 404 for never-onboarded instances too)
    assert sandbox.stats()["calls"][START] == 4


def test_a_second_run_reports_already_onboarded_and_starts_nothing(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    instances = _instances(sandbox, 3)
    path = write_csv(tmp_path / "in.csv", ["instance_id"], [[i["Id"]] for i in instances])
    assert _run(sandbox, path, tmp_path / "out", "--no-encryption")[0] == 0
    starts = sandbox.stats()["calls"][START]
    assert starts == 3
    code, _, run_dir = _run(sandbox, path, tmp_path / "out", "--no-encryption", run_id="c2")
    assert code == 0
    results = read(run_dir / "results.parquet")
    assert set(results["outcome"]) == {"already_onboarded"}
    assert set(results["status"]) == {"SUCCEEDED"}
    assert sandbox.stats()["calls"][START] == starts


def test_instances_onboarded_long_ago_fall_back_to_the_instance_config(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    (instance,) = _instances(sandbox, 1)
    key = _key(sandbox)
    path = write_csv(tmp_path / "in.csv", ["instance_id", "kms_key_arn"], [[instance["Id"], key]])
    assert _run(sandbox, path, tmp_path / "out")[0] == 0
    assert sandbox.control("expire-onboarding-jobs", {"region": "us-east-1"})["expired"] == [
        instance["Id"]]
    code, _, run_dir = _run(sandbox, path, tmp_path / "out", run_id="c2")
    assert code == 0
    row = read(run_dir / "results.parquet").row(0, named=True)
    assert (row["outcome"], row["status"], row["kms_key_arn"]) == (
        "already_onboarded", "SUCCEEDED", key)
    assert sandbox.stats()["calls"][START] == 1


def test_reset_failed_deletes_the_failed_job_and_starts_again(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    (instance,) = _instances(sandbox, 1)
    bad = write_csv(tmp_path / "bad.csv", ["instance_id", "kms_key_arn"],
                    [[instance["Id"], MISSING_KEY]])
    code, _, run_dir = _run(sandbox, bad, tmp_path / "out")
    assert code == 1
    assert read(run_dir / "failures.parquet")["error_code"].to_list() == ["KMS_KEY_NOT_FOUND"]
    # Without --reset-failed the FAILED job is reported, not touched.
    fixed = write_csv(tmp_path / "fixed.csv", ["instance_id", "kms_key_arn"],
                      [[instance["Id"], _key(sandbox)]])
    code, _, run_dir = _run(sandbox, fixed, tmp_path / "out", run_id="c2")
    assert code == 1
    assert read(run_dir / "failures.parquet")["error_code"].to_list() == ["KMS_KEY_NOT_FOUND"]
    assert sandbox.stats()["calls"].get("DeleteInstanceOnboardingJob", 0) == 0
    code, _, run_dir = _run(sandbox, fixed, tmp_path / "out", "--reset-failed", run_id="c3")
    assert code == 0
    row = read(run_dir / "results.parquet").row(0, named=True)
    assert (row["outcome"], row["status"]) == ("reset_and_started", "SUCCEEDED")
    assert sandbox.stats()["calls"]["DeleteInstanceOnboardingJob"] == 1


def test_a_kill_during_wait_then_resume_finishes_the_waiting(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.faults(onboarding_seconds=4)
    instances = _instances(sandbox, 3)
    path = write_csv(tmp_path / "in.csv", ["instance_id"], [[i["Arn"]] for i in instances])
    out = tmp_path / "out"
    process = subprocess.Popen(
        [*CLI, "run", "campaign-onboarding", str(path),
         "--endpoint-url", sandbox.url, "--out", str(out), "--run-id", "c1", "--yes",
         "--no-encryption"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        env=cli_env(),
    )
    sandbox.wait_for_calls(START, 3)
    _wait_for_notes(out / "c1" / "parts" / "notes.jsonl", "started", 3)
    process.kill()
    process.wait(timeout=30)
    assert not (out / "c1" / "results.parquet").exists()
    resumed = run_cli("resume", str(out / "c1"))
    assert resumed.returncode == 0, resumed.stderr
    results = read(out / "c1" / "results.parquet")
    assert results.height == 3
    assert set(results["status"]) == {"SUCCEEDED"}
    assert set(results["outcome"]) == {"started"}  # this run's jobs, not someone else's
    assert sandbox.stats()["calls"][START] == 3  # waited for, not started again


def _wait_for_notes(path: Path, kind: str, n: int, timeout_s: float = 30) -> None:
    """Block until the run has noted ``n`` notes of ``kind`` (its starts, made durable)."""
    deadline = time.monotonic() + timeout_s
    while True:
        text = path.read_text() if path.exists() else ""
        if sum(json.loads(line)["kind"] == kind for line in text.splitlines()
               if line.endswith("}")) >= n:
            return
        assert time.monotonic() < deadline, f"fewer than {n} {kind} notes"
        time.sleep(0.02)


def test_no_wait_reports_in_progress_and_v2_works_the_same(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    instances = _instances(sandbox, 2)
    path = write_csv(tmp_path / "in.csv", ["instance_id"], [[i["Id"]] for i in instances])
    code, _, run_dir = _run(sandbox, path, tmp_path / "out", "--no-encryption", "--no-wait",
                            "--campaigns-api", "v2")
    assert code == 0
    results = read(run_dir / "results.parquet")
    assert set(results["status"]) == {"IN_PROGRESS"}
    assert set(results["outcome"]) == {"started"}


def test_a_mutating_job_off_a_tty_without_yes_is_refused(sandbox: Sandbox,
                                                        tmp_path: Path) -> None:
    instances = _instances(sandbox, 1)
    path = write_csv(tmp_path / "in.csv", ["instance_id"], [[instances[0]["Id"]]])
    code, _, run_dir = _run(sandbox, path, tmp_path / "out", "--no-encryption", yes=False)
    assert code == 2
    assert not run_dir.exists()
    assert START not in sandbox.stats()["calls"]


@pytest.mark.parametrize("args", [["--kms-key-arn", "not-an-arn"],
                                  ["--kms-key-arn", MISSING_KEY, "--no-encryption"],
                                  ["--wait-timeout", "soon"]])
def test_bad_job_options_exit_2(sandbox: Sandbox, tmp_path: Path, args: list[str]) -> None:
    path = write_csv(tmp_path / "in.csv", ["instance_id"], [["x"]])
    assert _run(sandbox, path, tmp_path / "out", *args)[0] == 2
