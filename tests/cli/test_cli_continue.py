"""Continuing a run: `run` on an existing run refuses other options by name, `resume` and
`retry` take the access and pacing options again and record them, and every decision about a
run directory is taken under its lock, on the bytes that were read."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from tests.cli.world import World, build_world, read, write_csv
from tests.conftest import CLI, Sandbox, cli_env, run_cli

OP = "BatchGetFlowAssociation"


def _csv(world: World, path: Path, numbers: slice = slice(None)) -> Path:
    arns = {i["Id"]: i["Arn"] for i in world.instances}
    return write_csv(path, ["instance_id", "phone_number"],
                     [[arns[n.instance_id], n.id] for n in world.numbers[numbers]])


def _run(sandbox: Sandbox, path: Path, out: Path, *extra: str, **env: str
         ) -> subprocess.CompletedProcess[str]:
    return run_cli("run", "flow-associations", str(path), "--endpoint-url", sandbox.url,
                   "--out", str(out), "--run-id", "r", *extra, **env)


def test_run_on_an_existing_run_refuses_other_options_naming_each(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    world = build_world(sandbox, instances=1, numbers_per_instance=4)
    path = _csv(world, tmp_path / "in.csv")
    assert _run(sandbox, path, tmp_path / "out", "--deadline", "0s").returncode == 4
    refused = _run(sandbox, path, tmp_path / "out", "--resource-type",
                   "WHATSAPP_MESSAGING_PHONE_NUMBER", "--rate", "7")
    assert refused.returncode == 2
    message = json.loads(refused.stderr)["message"]
    assert "--resource-type WHATSAPP_MESSAGING_PHONE_NUMBER (the run has VOICE_PHONE_NUMBER)" \
        in message
    assert "--rate 7.0 (the run has 2.0)" in message
    assert "connect-bulk resume" in message
    assert OP not in sandbox.stats()["calls"]
    # The same options (a deadline is the execution's own, not the run's) continue it.
    assert _run(sandbox, path, tmp_path / "out", "--deadline", "1h").returncode == 0
    assert read(tmp_path / "out" / "r" / "results.parquet").height == 4


def test_resume_overrides_a_bad_profile_and_records_it(sandbox: Sandbox,
                                                       tmp_path: Path) -> None:
    world = build_world(sandbox, instances=1, numbers_per_instance=4)
    path = _csv(world, tmp_path / "in.csv")
    config = tmp_path / "config"
    config.write_text("[profile broken]\nregion = us-east-1\ncredential_process = false\n\n"
                      "[profile good]\nregion = us-east-1\naws_access_key_id = testing\n"
                      "aws_secret_access_key = testing\n")
    env = {"AWS_CONFIG_FILE": str(config)}
    first = _run(sandbox, path, tmp_path / "out", "--profile", "broken", **env)
    assert first.returncode == 3, first.stderr
    run_dir = tmp_path / "out" / "r"
    resumed = run_cli("resume", str(run_dir), "--profile", "good", "--rate", "9", **env)
    assert resumed.returncode == 0, resumed.stderr
    run = json.loads((run_dir / "run.json").read_text())
    assert (run["options"]["aws"]["profile"], run["options"]["aws"]["rate"]) == ("good", 9.0)
    assert run["executions"][-1]["overrides"] == {"--profile": "good", "--rate": 9.0}
    assert [e["mode"] for e in run["executions"]] == ["run", "resume"]


def test_retry_reset_failed_redrives_failed_onboarding_jobs(sandbox: Sandbox,
                                                           tmp_path: Path) -> None:
    connect = sandbox.client("connect")
    instance = connect.create_instance(IdentityManagementType="CONNECT_MANAGED",
                                       InstanceAlias="k", InboundCallsEnabled=True,
                                       OutboundCallsEnabled=True)["Id"]
    missing = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-4000-8000-00000000dead"
    path = write_csv(tmp_path / "in.csv", ["instance_id", "kms_key_arn"], [[instance, missing]])
    args = ["--endpoint-url", sandbox.url, "--region", "us-east-1", "--out",
            str(tmp_path / "out"), "--run-id", "c", "--yes"]
    assert run_cli("run", "campaign-onboarding", str(path), *args).returncode == 1
    run_dir = tmp_path / "out" / "c"
    assert run_cli("retry", str(run_dir)).returncode == 1  # not retryable: nothing redriven
    assert sandbox.stats()["calls"].get("DeleteInstanceOnboardingJob", 0) == 0
    again = run_cli("retry", str(run_dir), "--reset-failed")
    assert again.returncode == 1, again.stderr  # the key is still missing: FAILED again
    calls = sandbox.stats()["calls"]
    assert (calls["DeleteInstanceOnboardingJob"], calls["StartInstanceOnboardingJob"]) == (1, 2)
    assert json.loads((run_dir / "run.json").read_text())["job_options"]["reset_failed"] is True
    refused = run_cli("retry", str(run_dir), "--reset-failed", "--all")
    assert refused.returncode == 1
    flows = write_csv(tmp_path / "f.csv", ["instance_id", "phone_number"],
                      [[instance, "00000000-0000-4000-8000-000000000001"]])
    assert run_cli("run", "flow-associations", str(flows), "--endpoint-url", sandbox.url,
                   "--region", "us-east-1", "--out", str(tmp_path / "out"), "--run-id",
                   "f").returncode == 1
    wrong = run_cli("retry", str(tmp_path / "out" / "f"), "--reset-failed")
    assert wrong.returncode == 2
    assert "--reset-failed does not apply to flow-associations" in wrong.stderr


def test_a_second_start_waits_on_the_lock_and_leaves_one_inputs_items(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    world = build_world(sandbox, instances=1, numbers_per_instance=6)
    first = _csv(world, tmp_path / "a.csv", slice(0, 3))
    second = _csv(world, tmp_path / "b.csv", slice(3, 6))
    # A freezes right after reading its input, holding the run directory's lock.
    a = subprocess.Popen(
        [*CLI, "run", "flow-associations", str(first),
         "--endpoint-url", sandbox.url, "--out", str(tmp_path / "out"), "--run-id", "r"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        env=cli_env(CONNECT_BULK_CRASH_AT="input-read", CONNECT_BULK_CRASH_SIGNAL="STOP"),
    )
    try:
        _wait_stopped(a.pid)
        b = _run(sandbox, second, tmp_path / "out")
        assert b.returncode == 75, b.stderr
        # The input changes under A after A read it: A's record is of what it read.
        write_csv(first, ["instance_id", "phone_number"], [["x", "y"]])
    finally:
        a.send_signal(signal.SIGCONT)
    _, stderr = a.communicate(timeout=60)
    assert a.returncode == 0, stderr
    run_dir = tmp_path / "out" / "r"
    results = read(run_dir / "results.parquet")
    assert sorted(results["phone_number_id"]) == sorted(n.id for n in world.numbers[:3])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert (summary["items_total"], summary["items_pending"]) == (3, 0)
    # The file A read is not the file there now: a run of it is another input.
    refused = _run(sandbox, first, tmp_path / "out")
    assert refused.returncode == 2
    assert "another input" in refused.stderr
    _csv(world, first, slice(0, 3))  # the same bytes again: the same run, continued
    assert _run(sandbox, first, tmp_path / "out").returncode == 0


def _wait_stopped(pid: int) -> None:
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "T":
            return
        time.sleep(0.05)
    raise AssertionError("the process did not reach its stop point")
