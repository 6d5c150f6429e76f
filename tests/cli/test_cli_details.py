"""The smaller things people hit: each through the real CLI against the sandbox."""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

from connect_bulk.pipeline.aws import OperationStats
from connect_bulk.pipeline.progress import RunProgress
from rich.console import Console

from tests.cli.world import build_world, read, write_csv
from tests.conftest import Sandbox, run_cli


def _instance(sandbox: Sandbox, alias: str = "d") -> str:
    connect = sandbox.client("connect")
    return str(connect.create_instance(IdentityManagementType="CONNECT_MANAGED",
                                       InstanceAlias=alias, InboundCallsEnabled=True,
                                       OutboundCallsEnabled=True)["Id"])


def _onboard(sandbox: Sandbox, path: Path, out: Path, run_id: str, *extra: str
             ) -> tuple[int, Path, str]:
    result = run_cli("run", "campaign-onboarding", str(path), "--endpoint-url", sandbox.url,
                     "--region", "us-east-1", "--out", str(out), "--run-id", run_id, "--yes",
                     "--rate", "50", *extra)
    return result.returncode, out / run_id, result.stderr


def test_already_onboarded_with_another_key_is_a_warning_and_exit_1(sandbox: Sandbox,
                                                                    tmp_path: Path) -> None:
    instance = _instance(sandbox)
    kms = sandbox.client("kms")
    first_key, second_key = (kms.create_key()["KeyMetadata"]["Arn"] for _ in range(2))
    path = write_csv(tmp_path / "in.csv", ["instance_id"], [[instance]])
    code, run_dir, _ = _onboard(sandbox, path, tmp_path / "out", "a", "--kms-key-arn",
                                first_key)
    assert code == 0
    row = read(run_dir / "results.parquet").row(0, named=True)
    assert (row["outcome"], row["warning"]) == ("started", None)
    # The expected 404 of the first look-up is not an error of a healthy run.
    calls = json.loads((run_dir / "summary.json").read_text())["calls"]
    assert calls["GetInstanceOnboardingJobStatus"]["errors"] == 0
    assert calls["GetInstanceOnboardingJobStatus"]["not_found"] == 1

    code, run_dir, stderr = _onboard(sandbox, path, tmp_path / "out", "b", "--kms-key-arn",
                                     second_key)
    assert code == 1, stderr
    row = read(run_dir / "results.parquet").row(0, named=True)
    assert row["outcome"] == "already_onboarded"
    assert first_key in row["warning"] and second_key in row["warning"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["items_succeeded"], summary["items_warned"]) == (1, 1)
    assert sandbox.stats()["calls"]["StartInstanceOnboardingJob"] == 1


def test_blank_rows_from_a_spreadsheet_are_skipped_and_counted(sandbox: Sandbox,
                                                               tmp_path: Path) -> None:
    world = build_world(sandbox, instances=1, numbers_per_instance=2)
    arn = world.instances[0]["Arn"]
    path = tmp_path / "in.csv"
    path.write_text("instance_id,phone_number\n"
                    + "".join(f"{arn},{n.id}\n" for n in world.numbers) + ",\n , \n,\n")
    result = run_cli("run", "flow-associations", str(path), "--endpoint-url", sandbox.url,
                     "--out", str(tmp_path / "out"), "--run-id", "r")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["rows_total"], summary["rows_blank"], summary["rows_rejected"]) == (2, 3, 0)


def test_a_workbook_saved_as_csv_is_named_as_a_workbook(tmp_path: Path) -> None:
    path = tmp_path / "numbers.csv"
    path.write_bytes(b"PK\x03\x04\x14\x00\x06\x00" + bytes(200))
    result = run_cli("plan", "flow-associations", str(path))
    assert result.returncode == 2
    error = json.loads(result.stderr)
    assert "Excel workbook" in error["message"] and error["ts"].endswith("Z")


def test_text_log_lines_carry_the_time(sandbox: Sandbox, tmp_path: Path) -> None:
    world = build_world(sandbox, instances=1, numbers_per_instance=2)
    path = write_csv(tmp_path / "in.csv", ["instance_id", "phone_number"],
                     [[world.instances[0]["Arn"], n.id] for n in world.numbers])
    result = run_cli("run", "flow-associations", str(path), "--endpoint-url", sandbox.url,
                     "--out", str(tmp_path / "out"), "--log-format", "text")
    assert result.returncode == 0
    assert re.match(r"^\d\d:\d\d:\d\d run flow-associations", result.stderr)


def test_a_resumed_run_keeps_its_first_start_and_counts_only_working_time(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    world = build_world(sandbox, instances=6, numbers_per_instance=5)
    path = write_csv(tmp_path / "in.csv", ["instance_id", "phone_number"],
                     [[n.instance_id, n.id] for n in world.numbers])
    args = ["--endpoint-url", sandbox.url, "--region", "us-east-1", "--out",
            str(tmp_path / "out"), "--run-id", "r"]
    stopped = run_cli("run", "flow-associations", str(path), *args, "--rate", "1", "--burst",
                      "1", "--concurrency", "1", "--deadline", "2s")
    assert stopped.returncode == 4
    first = json.loads(stopped.stdout)
    run_dir = tmp_path / "out" / "r"
    assert first["continue_with"] == f"connect-bulk resume {run_dir}"
    time.sleep(3)  # not working
    began = time.monotonic()
    resumed = run_cli("resume", str(run_dir), "--rate", "50")
    working = time.monotonic() - began
    assert resumed.returncode == 0
    last = json.loads(resumed.stdout)
    assert last["started_at"] == first["started_at"]
    assert "continue_with" not in last
    assert last["elapsed_s"] <= first["elapsed_s"] + working + 0.2  # the pause is not work
    made = sum(c["made"] for c in last["calls"].values())
    assert last["calls_per_s"] == round(made / last["elapsed_s"], 2)


def test_plan_uses_the_region_it_is_given(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", ["instance_id", "phone_number"],
                     [["11111111-1111-4111-8111-111111111111",
                       "22222222-2222-4222-8222-222222222222"]])
    report = json.loads(run_cli("plan", "flow-associations", str(path), "--region",
                                "eu-west-2", "--json").stdout)
    assert [s["region"] for s in report["scopes"]] == ["eu-west-2"]


def test_an_endpoint_where_nothing_listens_is_said_at_once(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", ["instance_id", "phone_number"],
                     [["11111111-1111-4111-8111-111111111111",
                       "22222222-2222-4222-8222-222222222222"]])
    result = run_cli("run", "flow-associations", str(path), "--endpoint-url",
                     "http://127.0.0.1:9", "--region", "us-east-1", "--out",
                     str(tmp_path / "out"), "--max-attempts", "3")
    assert result.returncode == 3
    said = [json.loads(line) for line in result.stderr.splitlines()]
    unreachable = [e for e in said if e["event"] == "unreachable"]
    assert unreachable and "no answer from http://127.0.0.1:9" in unreachable[0]["message"]
    assert "GetCallerIdentity" in unreachable[0]["message"]


def test_e164_listing_pages_are_not_listed_again_after_a_kill(sandbox: Sandbox,
                                                              tmp_path: Path) -> None:
    made = sandbox.seed(instances=1, numbers_per_instance=2500, seed=11)
    instance = made["instances"][0]
    connect = sandbox.client("connect")
    listed = connect.list_phone_numbers_v2(InstanceId=instance["id"], MaxResults=10)
    e164 = listed["ListPhoneNumbersSummaryList"][0]["PhoneNumber"]
    path = write_csv(tmp_path / "in.csv", ["instance_id", "phone_number"],
                     [[instance["arn"], e164]])
    before = sandbox.stats()["calls"]["ListPhoneNumbersV2"]
    killed = run_cli("run", "flow-associations", str(path), "--endpoint-url", sandbox.url,
                     "--out", str(tmp_path / "out"), "--run-id", "r",
                     CONNECT_BULK_CRASH_AT="first-call:3")  # before page 3 of 3 is asked
    assert killed.returncode == -9
    assert run_cli("resume", str(tmp_path / "out" / "r")).returncode == 0
    assert sandbox.stats()["calls"]["ListPhoneNumbersV2"] - before == 3  # pages 1-2 noted
    assert read(tmp_path / "out" / "r" / "results.parquet")["phone_number"].to_list() == [e164]


class _Stats:
    stats = {"BatchGetFlowAssociation": OperationStats(made=9, throttled=123456)}


def test_the_progress_bar_keeps_to_one_line_at_80_columns() -> None:
    for width in (60, 80, 100, 160):
        out = io.StringIO()
        console = Console(file=out, width=width, force_terminal=True, color_system=None)
        progress = RunProgress(3_000_000, _Stats(), console=console)  # type: ignore[arg-type]
        progress.advance(1_234_567)
        console.print(progress.render())
        lines = out.getvalue().splitlines()
        assert len(lines) == 1 and len(lines[0]) <= width, (width, lines)
        assert "1234567/3000000" in lines[0] and "123456" in lines[0]


def test_phases_say_what_the_work_in_flight_waits_on(sandbox: Sandbox, tmp_path: Path) -> None:
    from connect_bulk.pipeline.job import Phases

    phases = Phases()
    phases.set("a", "IN_PROGRESS", what="waiting on {n} jobs")
    phases.set("b", "IN_PROGRESS", what="waiting on {n} jobs")
    phases.set("c", "SUCCEEDED", what="waiting on {n} jobs")
    phases.set("batch#1", "verifying")
    assert phases.describe() == ("waiting on 3 jobs: 2 IN_PROGRESS, 1 SUCCEEDED; "
                                 "1 batches: 1 verifying")
    phases.clear("c")
    assert "waiting on 2 jobs: 2 IN_PROGRESS" in phases.describe()

    sandbox.faults(onboarding_seconds=3)
    path = write_csv(tmp_path / "in.csv", ["instance_id"],
                     [[_instance(sandbox, f"p{i}")] for i in range(3)])
    code, run_dir, stderr = _onboard(sandbox, path, tmp_path / "out", "p", "--no-encryption")
    assert code == 0, stderr
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    said = [e["phase"] for e in events if e["event"] == "progress" and "phase" in e]
    assert "waiting on 3 jobs: 3 IN_PROGRESS" in said


def test_the_phase_stays_on_the_bar_s_line() -> None:
    for width in (80, 160):
        out = io.StringIO()
        console = Console(file=out, width=width, force_terminal=True, color_system=None)
        progress = RunProgress(40, _Stats(), console=console)  # type: ignore[arg-type]
        progress.advance(4)
        progress.phase("waiting on 36 jobs: 30 IN_PROGRESS, 6 SUCCEEDED; " * 3)
        console.print(progress.render())
        lines = out.getvalue().splitlines()
        assert len(lines) == 1 and len(lines[0]) <= width, (width, lines)
    assert "waiting on 36 jobs" in lines[0]
