"""`connect-bulk run flow-associations`, through the real CLI against the sandbox."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import polars as pl
import pytest
from connect_bulk.pipeline.sandbox.demo import SAMPLE_WORLD

from tests.cli.world import World, build_world, read, write_csv
from tests.conftest import CLI, Sandbox, cli_env, run_cli
from tests.helpers import split_calls

OP = "BatchGetFlowAssociation"


def _run(sandbox: Sandbox, input_path: Path, out: Path, *args: str, run_id: str = "r1",
         **env: str) -> tuple[int, dict[str, object], Path]:
    result = run_cli(
        "run", "flow-associations", str(input_path), "--endpoint-url", sandbox.url,
        "--region", "us-east-1", "--out", str(out), "--run-id", run_id, "--rate", "50",
        "--burst", "20", *args, **env,
    )
    run_dir = out / run_id
    summary = json.loads((run_dir / "summary.json").read_text()) if (
        run_dir / "summary.json").exists() else {}
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, summary, run_dir


@pytest.fixture
def world(sandbox: Sandbox) -> World:
    return build_world(sandbox, instances=2, numbers_per_instance=150)


def test_messy_csv_gives_exactly_the_right_results_failures_and_rejects(
    sandbox: Sandbox, world: World, tmp_path: Path
) -> None:
    a, b = world.instances
    a_numbers, b_numbers = world.of(a), world.of(b)
    rows: list[list[str]] = []
    for i, number in enumerate(a_numbers):
        instance = a["Arn"] if i % 2 == 0 else f"  {a['Id'].upper()} "
        rows.append([instance, number.id if i % 3 else f" {number.arn}"])
    rows += [[b["Id"] if i % 2 else b["Arn"], number.arn if i % 2 else number.id]
             for i, number in enumerate(b_numbers)]
    rows += [
        [a["Id"], a_numbers[0].arn],  # duplicate of row 1, by ARN where row 1 gave the ID
        [b["Arn"], b_numbers[1].arn],  # duplicate, same form
        [a["Id"], b_numbers[140].id],  # claimed in B, listed under A: fails, found by splitting
        [a["Arn"], b_numbers[141].arn.replace(b["Id"], a["Id"])],  # (not a legacy ARN: same)
    ]
    bad = [
        ["", a_numbers[5].id],
        ["nope", a_numbers[5].id],
        [a["Id"], "+1 (555) 799-9999"],  # E.164, not claimed in A: PhoneNumberNotFound
        [a["Id"], "garbage"],
        [a["Arn"], a_numbers[6].arn.replace("us-east-1", "eu-west-1")],
        [a["Id"], ""],
    ]
    rows += bad
    path = write_csv(tmp_path / "messy.csv", ["  INSTANCE_ARN ", "Phone-Number-Id"], rows,
                     bom=True)

    code, summary, run_dir = _run(sandbox, path, tmp_path / "out")

    assert code == 1
    results, failures, rejects = (read(run_dir / f) for f in
                                  ("results.parquet", "failures.parquet", "rejects.parquet"))
    # Every claimed number of the right instance has exactly one result, as the world says.
    expected = {(n.instance_id, n.id): n for n in world.numbers}
    assert results.height == 300
    assert set(zip(results["instance_id"], results["phone_number_id"], strict=True)) == set(
        expected)
    for row in results.iter_rows(named=True):
        number = expected[(row["instance_id"], row["phone_number_id"])]
        assert row["associated"] is (number.flow_arn is not None)
        assert row["flow_id"] == number.flow_arn
        assert row["phone_number_arn"] == number.arn
        assert (row["region"], row["account_id"]) == ("us-east-1", "123456789012")
    first_rows = dict(zip(results["phone_number_id"], results["input_row"], strict=True))
    assert first_rows[a_numbers[0].id] == 1  # the duplicate kept the first row
    # Only the two numbers of B listed under A failed, alone, after splitting; and the E.164
    # number A does not have, without being sent.
    codes = dict(zip(failures["item_key"], failures["error_code"], strict=True))
    assert codes == {b_numbers[140].id: "ResourceNotFoundException",
                     b_numbers[141].id: "ResourceNotFoundException",
                     "+15557999999": "PhoneNumberNotFound"}
    assert not any(failures["retryable"])
    assert set(failures["instance_id"]) == {a["Id"]}
    # Rejects: the five bad rows, with their reasons and their input as given.
    first_bad = len(rows) - len(bad) + 1
    assert rejects["input_row"].to_list() == [first_bad + i for i in (0, 1, 3, 4, 5)]
    reasons = rejects["reason"].to_list()
    assert reasons[0] == "instance_id is empty"
    assert "'nope' is not an instance ID" in reasons[1]
    assert "'garbage' is not a phone number ID" in reasons[2]
    assert "eu-west-1/123456789012 but the instance is in us-east-1/123456789012" in reasons[3]
    assert reasons[4] == "phone_number is empty"
    assert rejects.columns == ["input_row", "reason", "  INSTANCE_ARN ", "Phone-Number-Id"]
    assert rejects["Phone-Number-Id"][2] == "garbage"
    # The summary adds up: input rows = items + duplicates + rejects.
    assert summary["rows_total"] == len(rows) == 310
    assert (summary["items_total"], summary["rows_duplicate"], summary["rows_rejected"]) == (
        303, 2, 5)
    assert summary["items_total"] + summary["rows_duplicate"] + summary["rows_rejected"] == 310
    assert (summary["items_succeeded"], summary["items_failed"], summary["items_pending"]) == (
        300, 3, 0)
    assert summary["state"] == "completed_with_failures"
    # Calls: the minimum (2 batches per instance) plus the splits of A's second batch of 53,
    # whose items 50 and 51 are the misplaced numbers and 52 the unclaimed E.164 one.
    expected_calls = 4 + split_calls(53, {50, 51}, frozenset({52})) - 1
    stats = sandbox.stats()
    assert stats["calls"][OP] == expected_calls
    assert summary["calls"][OP]["made"] == expected_calls  # type: ignore[index]
    assert "GetCallerIdentity" not in stats["calls"]  # every instance was named by ARN once
    assert stats["calls"]["ListPhoneNumbersV2"] == 1  # A's numbers, listed once for the E.164


def test_the_committed_parquet_sample_succeeds_with_the_minimum_calls(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    sandbox.seed(**{k: getattr(SAMPLE_WORLD, k) for k in (
        "region", "instances", "numbers_per_instance", "flows_per_instance",
        "associated_fraction", "seed")})
    code, summary, run_dir = _run(sandbox, Path("data/sample-flow-associations.parquet"),
                                  tmp_path / "out")
    assert code == 0
    assert summary["state"] == "succeeded"
    assert summary["items_succeeded"] == summary["items_total"] == 100
    assert read(run_dir / "failures.parquet").height == 0
    assert read(run_dir / "rejects.parquet").height == 0
    assert sandbox.stats()["calls"][OP] == 2  # 50 numbers in each of 2 instances


def test_server_errors_and_a_quota_below_the_rate_still_finish_every_item(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    world = build_world(sandbox, instances=3, numbers_per_instance=120, associate_every=2)
    path = write_csv(tmp_path / "in.csv", ["instance_id", "phone_number"],
                     [[n.instance_id, n.id] for n in world.numbers])
    sandbox.faults(error_rate=0.05, quota=[f"{OP}=4/2"])
    code, summary, run_dir = _run(sandbox, path, tmp_path / "out", "--rate", "20",
                                  "--max-attempts", "12")
    assert code == 0, summary
    results = read(run_dir / "results.parquet")
    assert results.height == 360
    assert results.select(pl.struct("instance_id", "phone_number_id").n_unique()).item() == 360
    calls = summary["calls"][OP]  # type: ignore[index]
    stats = sandbox.stats()
    assert calls["made"] == stats["calls"][OP]
    assert calls["throttled"] == stats["throttled"].get(OP, 0) > 0
    assert calls["errors"] == stats["errors"].get(OP, 0)
    assert calls["retried"] == calls["throttled"] + calls["errors"]
    assert calls["made"] == 6 + calls["retried"]  # the minimum plus every retry, nothing else


def test_retry_redrives_retryable_failures_and_all_redrives_every_failure(
    sandbox: Sandbox, world: World, tmp_path: Path
) -> None:
    a, b = world.instances
    rows = [[a["Arn"], n.id] for n in world.of(a)[:20]]
    rows.append([a["Arn"], world.of(b)[0].id])  # fails for good: not claimed in A
    path = write_csv(tmp_path / "in.csv", ["instance_id", "phone_number"], rows)
    sandbox.faults(error_rate=1.0)
    code, summary, run_dir = _run(sandbox, path, tmp_path / "out", "--max-attempts", "2")
    assert code == 1
    failures = read(run_dir / "failures.parquet")
    assert failures.height == 21
    assert set(failures["error_code"]) == {"InternalServiceException"}
    assert all(failures["retryable"]) and set(failures["attempts"]) == {2}

    sandbox.faults(error_rate=0.0)
    retried = run_cli("retry", str(run_dir))
    assert retried.returncode == 1, retried.stderr
    failures = read(run_dir / "failures.parquet")
    assert failures["item_key"].to_list() == [world.of(b)[0].id]
    assert failures["error_code"].to_list() == ["ResourceNotFoundException"]
    assert read(run_dir / "results.parquet").height == 20
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["items_succeeded"], summary["items_failed"]) == (20, 1)

    made = sandbox.stats()["calls"][OP]
    again = run_cli("retry", str(run_dir))  # nothing retryable is left: no call
    assert again.returncode == 1
    assert sandbox.stats()["calls"][OP] == made
    everything = run_cli("retry", "--all", str(run_dir))
    assert everything.returncode == 1
    assert sandbox.stats()["calls"][OP] == made + 1
    assert read(run_dir / "failures.parquet").height == 1


@pytest.mark.parametrize(
    ("header", "content", "message"),
    [
        (["instance_id", "number"], "x,y\n", "missing required column phone_number"),
        (["instance", "instance_arn", "phone_number"], "a,b,c\n",
         "columns instance, instance_arn all mean instance_id"),
        (None, "", "the file is empty"),
    ],
)
def test_an_input_that_cannot_be_used_exits_2_with_one_line_and_no_call(
    sandbox: Sandbox, tmp_path: Path, header: list[str] | None, content: str, message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text((",".join(header) + "\n" if header else "") + content)
    code, _, run_dir = _run(sandbox, path, tmp_path / "out")
    result = run_cli("run", "flow-associations", str(path), "--endpoint-url", sandbox.url,
                     "--region", "us-east-1", "--out", str(tmp_path / "out"),
                     "--log-format", "text")
    assert code == result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert message in result.stderr and str(path) in result.stderr
    assert not run_dir.exists()
    assert sandbox.stats()["calls"] == {}


@pytest.mark.parametrize("broken", ["profile", "AWS_PROFILE", "AWS_CONFIG_FILE",
                                    "AWS_SHARED_CREDENTIALS_FILE"])
def test_an_aws_setup_that_cannot_be_read_is_refused_before_the_run_directory(
    sandbox: Sandbox, world: World, tmp_path: Path, broken: str
) -> None:
    """A profile that is not there, or an AWS config or credentials file that does not parse,
    even with --region given: exit 2 and one line naming it, no run directory, no call; a run
    started before the file broke is refused the same way on resume."""
    arns = {i["Id"]: i["Arn"] for i in world.instances}
    path = write_csv(tmp_path / "in.csv", ["instance_id", "phone_number"],
                     [[arns[n.instance_id], n.id] for n in world.numbers])
    unreadable = tmp_path / "aws-file"
    unreadable.write_text("[default\nregion = us-east-1\n")  # no closing bracket
    args: tuple[str, ...] = ("--profile", "nope") if broken == "profile" else ()
    made = sandbox.stats()["calls"]  # building the world
    env = {"profile": {}, "AWS_PROFILE": {broken: "nope"}}.get(broken, {broken: str(unreadable)})
    code, _, run_dir = _run(sandbox, path, tmp_path / "out", "--log-format", "text", *args,
                            **env)
    said = {"profile": "AWS profile 'nope' not found",
            "AWS_PROFILE": "AWS profile 'nope' (AWS_PROFILE) not found"}.get(broken,
                                                                         str(unreadable))
    result = run_cli("run", "flow-associations", str(path), "--endpoint-url", sandbox.url,
                     "--region", "us-east-1", "--out", str(tmp_path / "out"),
                     "--log-format", "text", *args, **env)
    assert code == result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and said in result.stderr, result.stderr
    assert not run_dir.exists()
    assert sandbox.stats()["calls"] == made
    if broken == "profile":
        return
    code, _, run_dir = _run(sandbox, path, tmp_path / "out", "--rate", "1", "--burst", "1",
                            "--concurrency", "1", "--deadline", "2s")
    assert code == 4  # stopped with items pending
    resumed = run_cli("resume", str(run_dir), "--log-format", "text", **env)
    error = resumed.stderr.strip().splitlines()[-1]  # after the line saying it resumes
    assert resumed.returncode == 2, resumed.stderr
    assert error.startswith("connect-bulk: error: ") and said in error
    assert "Traceback" not in resumed.stderr


@pytest.mark.parametrize("given", ["arn", "id"])
def test_an_sso_sign_in_that_expired_stops_the_run_with_every_item_pending_and_one_line(
    sandbox: Sandbox, world: World, tmp_path: Path, given: str
) -> None:
    """The nightly run's usual way to lose its credentials: its profile signs in through SSO,
    and the token is gone by 2 a.m. As cron runs it, in a process of its own: exit 3, every
    item pending for `resume`, the cause and what to do in one line, and aiobotocore's warning
    (logged with a traceback, which Python printed to stderr) one line of the run's log. Every
    item of instances given by ARN failed with exit 1 before, under a traceback a call (by ID,
    the account's look-up comes first, and stopped the run)."""
    config = tmp_path / "config"
    config.write_text("[profile night]\nsso_session = corp\nsso_account_id = 123456789012\n"
                      "sso_role_name = Admin\nregion = us-east-1\n\n[sso-session corp]\n"
                      "sso_start_url = https://corp.example.com/start\nsso_region = us-east-1\n")
    env = {k: v for k, v in cli_env().items() if k not in ("AWS_ACCESS_KEY_ID",
                                                           "AWS_SECRET_ACCESS_KEY")}
    env |= {"AWS_CONFIG_FILE": str(config), "AWS_PROFILE": "night", "HOME": str(tmp_path)}
    arns = {i["Id"]: i["Arn"] for i in world.instances}
    path = write_csv(tmp_path / "in.csv", ["instance_id", "phone_number"], [
        [arns[n.instance_id] if given == "arn" else n.instance_id, n.id] for n in world.numbers])
    made = sandbox.stats()["calls"]
    result = subprocess.run(
        [*CLI, "run", "flow-associations", str(path), "--endpoint-url", sandbox.url, "--out",
         str(tmp_path / "out"), "--run-id", "night", "--log-format", "text", "--no-progress"],
        capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    said = result.stdout + result.stderr
    assert "SSOTokenLoadError" in said and "aws sso login" in said
    assert f"connect-bulk resume {tmp_path / 'out' / 'night'}" in said
    summary = json.loads((tmp_path / "out" / "night" / "summary.json").read_text())
    assert summary["state"] == "aborted"
    assert summary["items_pending"] == summary["items_total"] == len(world.numbers)
    assert summary["items_failed"] == 0
    events = [json.loads(line) for line in
              (tmp_path / "out" / "night" / "events.jsonl").read_text().splitlines()]
    warned = [e for e in events if e["event"] == "library_warning"]
    assert warned and all("\n" not in e["message"] for e in warned)
    assert any("SSOTokenLoadError" in e["message"] for e in warned)
    assert sandbox.stats()["calls"] == made  # nothing was sent unsigned


def test_a_missing_file_and_an_unknown_job_are_usage_errors(tmp_path: Path) -> None:
    missing = run_cli("run", "flow-associations", str(tmp_path / "none.csv"),
                      "--log-format", "text")
    assert missing.returncode == 2
    assert "no such file" in missing.stderr
    unknown = run_cli("run", "no-such-job", "x.csv")
    assert unknown.returncode == 2


def test_run_again_with_the_same_run_id_continues_and_another_input_is_refused(
    sandbox: Sandbox, world: World, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "in.csv", ["instance_id", "phone_number"],
                     [[n.instance_id, n.id] for n in world.numbers[:30]])
    code, _, _ = _run(sandbox, path, tmp_path / "out")
    assert code == 0
    made = sandbox.stats()["calls"][OP]
    code, summary, _ = _run(sandbox, path, tmp_path / "out")
    assert code == 0
    assert sandbox.stats()["calls"][OP] == made  # nothing left to do, nothing done twice
    assert summary["items_succeeded"] == 30
    other = write_csv(tmp_path / "other.csv", ["instance_id", "phone_number"],
                      [[n.instance_id, n.id] for n in world.numbers[:31]])
    code, _, _ = _run(sandbox, other, tmp_path / "out")
    assert code == 2


def test_off_a_tty_every_line_printed_is_json(sandbox: Sandbox, world: World,
                                              tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", ["instance_id", "phone_number"],
                     [[n.instance_id, n.id] for n in world.numbers[:10]] + [["bad", "bad"]])
    result = run_cli("run", "flow-associations", str(path), "--endpoint-url", sandbox.url,
                     "--region", "us-east-1", "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line]
    records = [json.loads(line) for line in lines]
    events = [r.get("event") for r in records]
    assert "run_started" in events and "run_finished" in events
    finished = next(r for r in records if r.get("event") == "run_finished")
    assert finished["items_succeeded"] == 10 and finished["rows_rejected"] == 1
    assert json.loads(result.stdout)["state"] == "completed_with_failures"


def test_when_the_callers_account_cannot_be_known_the_run_aborts(
    sandbox: Sandbox, world: World, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "in.csv", ["instance_id", "phone_number"],
                     [[n.instance_id, n.id] for n in world.numbers[:5]])
    sandbox.faults(error_rate=1.0)
    code, summary, run_dir = _run(sandbox, path, tmp_path / "out", "--max-attempts", "2")
    assert code == 3
    assert summary["state"] == "aborted"
    assert summary["items_pending"] == 5
    sandbox.faults(error_rate=0.0)
    assert run_cli("resume", str(run_dir)).returncode == 0


def test_an_instance_that_is_not_there_is_looked_up_once_however_its_batch_splits(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    unknown = "arn:aws:connect:us-east-1:123456789012:instance/00000000-0000-4000-8000-0000000000ff"
    path = write_csv(tmp_path / "in.csv", ["instance_id", "phone_number"],
                     [[unknown, f"00000000-0000-4000-8000-{i:012d}"] for i in range(8)])
    result = run_cli("run", "flow-associations", str(path), "--endpoint-url", sandbox.url,
                     "--out", str(tmp_path / "out"), "--run-id", "r")
    assert result.returncode == 1, result.stderr
    failures = read(tmp_path / "out" / "r" / "failures.parquet")
    assert failures.height == 8
    assert set(failures["error_code"]) == {"ResourceNotFoundException"}
    calls = sandbox.stats()["calls"]
    # the batch of 8 is split down to single numbers; the look-ups are not made again
    assert (calls["DescribeInstance"], calls["ListContactFlows"]) == (1, 1)
    assert calls["BatchGetFlowAssociation"] == split_calls(8, set(range(8)))
