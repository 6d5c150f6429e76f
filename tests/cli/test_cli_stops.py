"""Stops that stop: after SIGINT, SIGTERM, a deadline or an abort, no call starts (not even
one already waiting for its rate limiter), and a stop at any moment from start-up on gives 130
and a run directory that is consistent (absent, or resumable)."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from tests.cli.world import build_world, read, seeded_input, write_csv
from tests.conftest import CLI, Sandbox, cli_env, run_cli

START = "StartInstanceOnboardingJob"
OP = "BatchGetFlowAssociation"


def _instances_csv(sandbox: Sandbox, path: Path, n: int) -> Path:
    connect = sandbox.client("connect")
    ids = [connect.create_instance(IdentityManagementType="CONNECT_MANAGED",
                                   InstanceAlias=f"s{i}", InboundCallsEnabled=True,
                                   OutboundCallsEnabled=True)["Id"] for i in range(n)]
    return write_csv(path, ["instance_id"], [[i] for i in ids])


def _popen(*args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, *args], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=cli_env(**env),
    )


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_no_mutating_call_starts_after_the_signal_even_one_waiting_for_its_limiter(
    sandbox: Sandbox, tmp_path: Path, signum: int
) -> None:
    path = _instances_csv(sandbox, tmp_path / "in.csv", 40)
    process = _popen("run", "campaign-onboarding", str(path), "--endpoint-url", sandbox.url,
                     "--region", "us-east-1", "--out", str(tmp_path / "out"), "--run-id", "c",
                     "--rate", "1", "--burst", "1", "--no-wait", "--no-encryption", "--yes")
    sandbox.wait_for_calls(START, 4)
    process.send_signal(signum)
    at_signal = sandbox.stats()["calls"][START]
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    # At most the one call that was on the wire when the signal came (--rate 1: one at a time).
    assert sandbox.stats()["calls"][START] <= at_signal + 1
    summary = json.loads((tmp_path / "out" / "c" / "summary.json").read_text())
    assert summary["state"] == "interrupted"
    started = read(tmp_path / "out" / "c" / "results.parquet").height
    assert started == summary["items_succeeded"] >= 4
    assert summary["items_pending"] == 40 - started
    # The runs of this host that share its quotas know at once that it spends them no more
    assert list((tmp_path / "cache" / "connect-bulk" / "runs").iterdir()) == []


def test_no_look_up_starts_after_the_signal_even_one_made_ahead(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """A batch an instance: the look-ups (alias, flows) of the instances to come, those made
    ahead among them, wait for their limiters when the signal comes; none starts after it."""
    path = seeded_input(sandbox, tmp_path / "in.csv", instances=30, per_instance=1, seed=5)
    process = _popen("run", "flow-associations", str(path), "--endpoint-url", sandbox.url,
                     "--out", str(tmp_path / "out"), "--run-id", "f", "--rate", "2",
                     "--burst", "1", "--concurrency", "4", "--log-format", "json")
    sandbox.wait_for_calls(OP, 3)  # batches have come back: look-ups are made ahead
    process.send_signal(signal.SIGINT)
    at_signal = sandbox.stats()["calls"]
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    after = sandbox.stats()["calls"]
    for operation in ("DescribeInstance", "ListContactFlows", OP):
        # at most the one on the wire (--burst 1: one at a time each)
        assert after[operation] <= at_signal[operation] + 1, operation
    assert at_signal["DescribeInstance"] < 30  # most were still to come
    summary = json.loads((tmp_path / "out" / "f" / "summary.json").read_text())
    assert summary["state"] == "interrupted"
    assert summary["items_succeeded"] + summary["items_pending"] == 30


def test_a_deadline_stops_calls_waiting_for_their_limiter(sandbox: Sandbox,
                                                          tmp_path: Path) -> None:
    path = _instances_csv(sandbox, tmp_path / "in.csv", 30)
    result = run_cli("run", "campaign-onboarding", str(path), "--endpoint-url", sandbox.url,
                     "--region", "us-east-1", "--out", str(tmp_path / "out"), "--run-id", "c",
                     "--rate", "2", "--burst", "1", "--no-wait", "--no-encryption", "--yes",
                     "--deadline", "3s")
    assert result.returncode == 4, result.stderr
    summary = json.loads((tmp_path / "out" / "c" / "summary.json").read_text())
    # 2 a second for 3 s: about 6 started, not the 30 queued behind the limiter.
    assert sandbox.stats()["calls"][START] == summary["items_succeeded"] <= 9
    assert summary["elapsed_s"] < 10


@pytest.mark.parametrize("moment", ["input-read", "run-created", "first-call"])
def test_sigterm_at_any_moment_of_start_up_exits_130_and_leaves_a_consistent_run(
    sandbox: Sandbox, tmp_path: Path, moment: str
) -> None:
    world = build_world(sandbox, instances=2, numbers_per_instance=5)
    # Bare instance IDs: the first call is STS GetCallerIdentity, before the engine runs.
    path = write_csv(tmp_path / "in.csv", ["instance_id", "phone_number"],
                     [[n.instance_id, n.id] for n in world.numbers])
    args = ["run", "flow-associations", str(path), "--endpoint-url", sandbox.url,
            "--region", "us-east-1", "--out", str(tmp_path / "out"), "--run-id", "r"]
    result = run_cli(*args, CONNECT_BULK_CRASH_AT=moment, CONNECT_BULK_CRASH_SIGNAL="TERM")
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr
    json.loads(result.stderr.splitlines()[-1])  # one JSON line off a TTY
    run_dir = tmp_path / "out" / "r"
    if moment == "input-read":
        assert not run_dir.exists()  # refused before it began: nothing left behind
    else:
        assert json.loads((run_dir / "summary.json").read_text())["state"] == "interrupted"
        assert OP not in sandbox.stats()["calls"]
        assert run_cli("resume", str(run_dir)).returncode == 0
        assert read(run_dir / "results.parquet").height == 10
    assert run_cli(*args).returncode == 0


def test_sigterm_while_sts_hangs_exits_130_at_once(sandbox: Sandbox, tmp_path: Path) -> None:
    world = build_world(sandbox, instances=1, numbers_per_instance=3)
    path = write_csv(tmp_path / "in.csv", ["instance_id", "phone_number"],
                     [[n.instance_id, n.id] for n in world.numbers])
    sandbox.faults(drop_rate=1.0)  # STS never answers: the call is retried with backoff
    process = _popen("run", "flow-associations", str(path), "--endpoint-url", sandbox.url,
                     "--region", "us-east-1", "--out", str(tmp_path / "out"), "--run-id", "r")
    sandbox.wait_for_calls("GetCallerIdentity", 2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    summary = json.loads((tmp_path / "out" / "r" / "summary.json").read_text())
    assert (summary["state"], summary["items_pending"]) == ("interrupted", 3)
    sandbox.faults(drop_rate=0.0)
    assert run_cli("resume", str(tmp_path / "out" / "r")).returncode == 0


def test_an_endpoint_that_never_answers_stops_the_run_with_every_item_pending(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """The network is down at 2 a.m., or --endpoint-url is wrong: every attempt ends without
    an answer. Exit 3 with one line saying so and every item pending; once it answers, resume
    finishes. Every item failed before, one backoff at a time, with exit 1."""
    path = seeded_input(sandbox, tmp_path / "in.csv", instances=2, per_instance=150, seed=7)
    sandbox.faults(drop_rate=1.0)  # every connection closed without an answer
    args = ("run", "flow-associations", str(path), "--endpoint-url", sandbox.url, "--out",
            str(tmp_path / "out"), "--run-id", "r", "--max-attempts", "2", "--log-format", "text")
    result = run_cli(*args)
    assert result.returncode == 3, result.stderr[-2000:]
    assert "no answer from AWS to any call of this run" in result.stdout + result.stderr
    summary = json.loads((tmp_path / "out" / "r" / "summary.json").read_text())
    assert (summary["state"], summary["items_failed"]) == ("aborted", 0)
    assert summary["items_pending"] == summary["items_total"] == 300
    sandbox.faults(drop_rate=0.0)
    assert run_cli("resume", str(tmp_path / "out" / "r")).returncode == 0
    assert read(tmp_path / "out" / "r" / "results.parquet").height == 300


def test_an_endpoint_that_stops_answering_mid_run_stops_it_once_silent_for_long_enough(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """The network goes down mid-run: a call whose attempts are spent while nothing else was
    answered for ``UNREACHABLE_S`` stops the run (exit 3), what was answered kept, the rest
    pending; one spent sooner is its items' failure, retryable. Once it answers again,
    resume and retry finish every item. Counted from a call's first attempt, not from when it
    began to wait for its slot: three batches failed before the stop, the answers to the
    batches before them having come in while they waited."""
    path = seeded_input(sandbox, tmp_path / "in.csv", instances=1, per_instance=1000, seed=8)
    run_dir = tmp_path / "out" / "r"
    process = _popen("run", "flow-associations", str(path), "--endpoint-url", sandbox.url,
                     "--out", str(tmp_path / "out"), "--run-id", "r", "--rate", "2",
                     "--concurrency", "1", "--max-attempts", "8", "--log-format", "text")
    sandbox.wait_for_calls(OP, 3)
    sandbox.faults(drop_rate=1.0)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 3, stderr[-2000:]
    assert "Traceback" not in stderr
    assert "no answer from AWS to any call for" in stdout + stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["state"] == "aborted"
    assert summary["items_succeeded"] >= 200 and summary["items_pending"] > 0
    # At most the batches whose attempts happened to be spent within UNREACHABLE_S (each about
    # one in eight at --max-attempts 8), not those that waited for a call slot while the last
    # answers came in.
    assert summary["items_failed"] <= 200
    assert all(read(run_dir / "failures.parquet")["retryable"])
    sandbox.faults(drop_rate=0.0)
    assert run_cli("resume", str(run_dir)).returncode in (0, 1)
    assert run_cli("retry", str(run_dir)).returncode == 0
    assert read(run_dir / "results.parquet").height == 1000
