"""What the machine does to a run: a full disk mid-run, a read-only mount, a damaged run
directory. Each is one line with its exit code (SPEC §5), never a traceback, and a run that
`resume` completes once the cause is fixed.

A full disk and a read-only mount are real: a tmpfs of a few hundred KiB, and a read-only bind
mount, each in a private mount namespace (``unshare``) so that the test needs no privilege."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from connect_bulk.pipeline.job import Item, Success
from connect_bulk.pipeline.journal import Journal
from connect_bulk.pipeline.rundir import RunDir

from tests.cli.world import read, seeded_input
from tests.conftest import Sandbox, cli_env, run_cli

OP = "BatchGetFlowAssociation"
CLI = f"{shlex.quote(sys.executable)} -m connect_bulk.pipeline"


def _in_namespace(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``script`` as root of a private user and mount namespace (mounts vanish with it)."""
    return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-euc",
                           script], capture_output=True, text=True, timeout=300,
                          env=cli_env(**env), stdin=subprocess.DEVNULL)


def _codes(output: str) -> dict[str, int]:
    return {line.split("=")[0]: int(line.split("=")[1])
            for line in output.splitlines() if line.startswith("rc_")}


def _one_error_line(path: Path) -> str:
    lines = path.read_text().splitlines()
    errors = [json.loads(line) for line in lines if '"level": "error"' in line]
    assert "Traceback" not in path.read_text()
    assert len(errors) == 1, lines
    assert errors[0]["ts"]
    return str(errors[0]["message"])


def test_a_full_disk_mid_run_aborts_with_exit_3_and_resume_completes(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    path = seeded_input(sandbox, tmp_path / "in.csv", instances=4, per_instance=500, seed=5)
    out, keep = tmp_path / "disk", tmp_path / "keep"
    out.mkdir()
    keep.mkdir()
    run = (f"{CLI} run flow-associations {path} --endpoint-url {sandbox.url} --out {out} "
           "--run-id r --concurrency 2 --rate 20")
    script = f"""
        mount -t tmpfs -o size=2m tmpfs {out}
        head -c 1650000 /dev/zero > {out}/filler
        set +e
        {run} > {keep}/first.out 2> {keep}/first.err; echo rc_first=$?
        cp {out}/r/summary.json {keep}/aborted-summary.json 2>/dev/null
        {CLI} status {out}/r > {keep}/status.out 2> {keep}/status.err; echo rc_status=$?
        rm {out}/filler
        {CLI} resume {out}/r > {keep}/resume.out 2> {keep}/resume.err; echo rc_resume=$?
        cp -r {out}/r {keep}/r
    """
    result = _in_namespace(script)
    codes = _codes(result.stdout)
    assert codes["rc_first"] == 3, (result.stderr, (keep / "first.err").read_text())
    message = _one_error_line(keep / "first.err") if "error" in (
        keep / "first.err").read_text() else json.loads(
        (keep / "first.out").read_text().splitlines()[-1])["note"]
    assert "No space left on device" in message
    assert codes["rc_status"] == 0
    assert codes["rc_resume"] == 0, (keep / "resume.err").read_text()
    results = read(keep / "r" / "results.parquet")
    assert results.height == 2000
    assert results.select(pl.struct("instance_id", "item_key").n_unique()).item() == 2000
    # Answers that could not be written are asked again, nothing else: at most the calls of
    # the batches whose outcomes the full disk lost.
    assert sandbox.stats()["calls"][OP] <= 20 + 20


def test_a_read_only_mount_lets_status_read_and_refuses_writes_in_one_line(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    path = seeded_input(sandbox, tmp_path / "in.csv", instances=2, per_instance=50, seed=6)
    out, keep = tmp_path / "ro", tmp_path / "keep"
    keep.mkdir()
    assert run_cli("run", "flow-associations", str(path), "--endpoint-url", sandbox.url,
                   "--out", str(out), "--run-id", "r", "--deadline", "0s").returncode == 4
    script = f"""
        mount --bind {out} {out}
        mount -o remount,bind,ro {out}
        set +e
        {CLI} status {out}/r > {keep}/status.out 2> {keep}/status.err; echo rc_status=$?
        {CLI} resume {out}/r > {keep}/resume.out 2> {keep}/resume.err; echo rc_resume=$?
        {CLI} run flow-associations {path} --endpoint-url {sandbox.url} --out {out}/new \
            > {keep}/new.out 2> {keep}/new.err; echo rc_new=$?
    """
    result = _in_namespace(script)
    codes = _codes(result.stdout)
    assert codes == {"rc_status": 0, "rc_resume": 2, "rc_new": 2}, result.stderr
    assert "deadline" in (keep / "status.out").read_text()
    assert "Read-only file system" in _one_error_line(keep / "resume.err")
    assert "Read-only file system" in _one_error_line(keep / "new.err")
    assert OP not in sandbox.stats()["calls"]
    assert run_cli("resume", str(out / "r")).returncode == 0  # writable again: it completes


def _damage_run(sandbox: Sandbox, tmp_path: Path) -> Path:
    """A run stopped part-way, with answers in parts and items still pending."""
    path = seeded_input(sandbox, tmp_path / "in.csv", instances=6, per_instance=20, seed=7)
    result = run_cli("run", "flow-associations", str(path), "--endpoint-url", sandbox.url,
                     "--out", str(tmp_path / "out"), "--run-id", "r", "--rate", "1", "--burst",
                     "1", "--concurrency", "1", "--deadline", "2s")
    assert result.returncode == 4
    return tmp_path / "out" / "r"


def _first_part(run_dir: Path) -> Path:
    return sorted((run_dir / "parts").glob("results-*.parquet"))[0]


DAMAGE = {
    "run.json": lambda d: (d / "run.json").write_text('{"job": "flow-assoc'),
    "checkpoint.json": lambda d: (d / "parts" / "checkpoint.json").write_text("[1, 2"),
    "wal.jsonl": lambda d: (d / "parts" / "wal.jsonl").write_text("not json\n{}\n"),
    "items.parquet": lambda d: (d / "parts" / "items.parquet").unlink(),
    "results-part": lambda d: _first_part(d).write_bytes(b"PAR1 not really"),
    "deleted-part": lambda d: _first_part(d).unlink(),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_run_directory_is_named_in_one_line_and_not_called_resumable(
    sandbox: Sandbox, tmp_path: Path, damage: str
) -> None:
    run_dir = _damage_run(sandbox, tmp_path)
    backup = tmp_path / "backup"
    shutil.copytree(run_dir, backup)
    named = _first_part(run_dir).name if damage.endswith("part") else damage.split("-")[0]
    DAMAGE[damage](run_dir)
    calls = sandbox.stats()["calls"][OP]
    for command in ("resume", "status"):
        result = run_cli(command, str(run_dir))
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        (message,) = [json.loads(line)["message"] for line in result.stderr.splitlines()]
        assert named in message
        assert "resume continues" not in result.stdout
    assert sandbox.stats()["calls"][OP] == calls  # nothing was called again
    shutil.rmtree(run_dir)
    shutil.copytree(backup, run_dir)  # the cause is fixed
    assert run_cli("resume", str(run_dir)).returncode == 0
    assert read(run_dir / "results.parquet").height == 120
    assert sandbox.stats()["calls"][OP] == 6


def test_a_torn_last_journal_line_does_not_swallow_the_next(tmp_path: Path) -> None:
    rundir = RunDir(tmp_path / "run")
    rundir.create()
    pl.DataFrame({"instance_id": ["i"], "item_key": ["k1"]}).write_parquet(rundir.items)
    schema = {"instance_id": pl.String}
    (rundir.parts / "wal.jsonl").write_text('{"batch_id": "i#0", "at": "2026-')  # torn
    journal = Journal(rundir, schema)
    assert journal.load().height == 0
    item = Item("k2", "i", "us-east-1", "1", 2)
    journal.record("i#1", [Success(item, {"instance_id": "i"}, 1)])
    journal.sync_wal()  # appended after the torn line; then a crash before any part
    again = Journal(rundir, schema)
    assert again.load()["item_key"].to_list() == ["k2"]


@pytest.mark.parametrize("option", [["--deadline", "tomorrow"],
                                    ["--role-arn-template", "ConnectBulk"]])
def test_a_refused_start_leaves_no_run_directory(sandbox: Sandbox, tmp_path: Path,
                                                 option: list[str]) -> None:
    path = seeded_input(sandbox, tmp_path / "in.csv", instances=1, per_instance=3, seed=8)
    result = run_cli("run", "flow-associations", str(path), "--endpoint-url", sandbox.url,
                     "--out", str(tmp_path / "out"), "--run-id", "r", *option)
    assert result.returncode == 2
    assert option[0] in json.loads(result.stderr)["message"]
    assert not (tmp_path / "out" / "r").exists()

