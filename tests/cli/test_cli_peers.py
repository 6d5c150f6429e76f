"""Runs of one host that spend one quota share it (SPEC §9's neighbours, ``pipeline/peers``):
two real runs at once against the sandbox, with one state directory, as two cron jobs of one
user have."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.cli.world import seeded_input
from tests.conftest import CLI, Sandbox, cli_env, run_cli

OP = "BatchGetFlowAssociation"
QUOTA = 6.0


def _args(sandbox: Sandbox, path: Path, out: Path, run_id: str, state: Path) -> list[str]:
    return ["run", "flow-associations", str(path), "--endpoint-url", sandbox.url,
            "--out", str(out), "--run-id", run_id, "--rate", f"{QUOTA:g}",
            "--burst", f"{2 * QUOTA:g}", "--no-flow-names", "--log-format", "json",
            "--state-dir", str(state)]


def _shared(lines: str) -> list[dict[str, Any]]:
    """The ``quota_shared`` events of the numbers' quota (the instances' look-ups have theirs)."""
    events = [json.loads(line) for line in lines.splitlines() if line.startswith("{")]
    return [e for e in events if e["event"] == "quota_shared" and e["operation"] == OP]


def _side_by_side(sandbox: Sandbox, tmp_path: Path, instances: int, states: tuple[Path, Path],
                  seed: int) -> tuple[str, str]:
    """A run over ``instances`` x 1000 numbers, and, once it has made a few calls, a run over
    1000 more; both to the end. Their logs."""
    long = seeded_input(sandbox, tmp_path / "long.csv", instances=instances, per_instance=1000,
                        seed=seed)
    short = seeded_input(sandbox, tmp_path / "short.csv", instances=1, per_instance=1000,
                         seed=seed + 1)
    sandbox.faults(quota=[f"{OP}={QUOTA:g}/{2 * QUOTA:g}"])
    first = subprocess.Popen(
        [*CLI, *_args(sandbox, long, tmp_path / "out", "long", states[0])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        env=cli_env())
    try:
        sandbox.wait_for_calls(OP, 2 * instances)
        second = run_cli(*_args(sandbox, short, tmp_path / "out", "short", states[1]))
        _, first_stderr = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == second.returncode == 0, first_stderr[-2000:] + second.stderr
    assert "Traceback" not in first_stderr + second.stderr
    return first_stderr, second.stderr


def test_two_runs_of_one_host_share_a_quota_and_the_one_left_takes_it_back(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    # 60 calls at 6/s alone; the second run comes once it has made a few
    first_stderr, second_stderr = _side_by_side(sandbox, tmp_path, 6, (state, state), seed=5)

    # The second starts at its share, and says so on its first beat ...
    came = _shared(second_stderr)
    assert [e["runs"] for e in came] == [2]
    assert came[0]["rate"] <= QUOTA / 2 * 1.2
    assert "1 other run of this host spends this quota now" in came[0]["message"]
    # ... the first makes room for it at once, and takes the whole quota back once it ended
    told = _shared(first_stderr)
    assert [e["runs"] for e in told] == [2, 1]
    assert told[0]["rate"] <= QUOTA / 2 * 1.2
    assert told[1]["rate"] >= QUOTA / 2 * 1.2
    assert "no other run of this host spends this quota now" in told[1]["message"]
    # Each did all its work, and neither left its file behind
    for run_id, items in (("long", 6000), ("short", 1000)):
        summary = json.loads((tmp_path / "out" / run_id / "summary.json").read_text())
        assert summary["items_succeeded"] == items
    assert list((state / "runs").iterdir()) == []


def test_runs_with_state_dirs_of_their_own_do_not_know_of_each_other(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """Runs of other hosts (here: other state directories) are found by throttles only."""
    first, second = _side_by_side(sandbox, tmp_path, 2, (tmp_path / "a", tmp_path / "b"), seed=7)
    assert _shared(first) == _shared(second) == []


def test_a_run_with_a_fixed_rate_shares_nothing(sandbox: Sandbox, tmp_path: Path) -> None:
    """``--no-adaptive`` holds ``--rate`` whatever others spend: it names no quota to them."""
    path = seeded_input(sandbox, tmp_path / "in.csv", instances=1, per_instance=200, seed=9)
    state = tmp_path / "state"
    run = run_cli(*_args(sandbox, path, tmp_path / "out", "fixed", state), "--no-adaptive")
    assert run.returncode == 0, run.stderr
    assert _shared(run.stderr) == []
    assert not (state / "runs").exists()
