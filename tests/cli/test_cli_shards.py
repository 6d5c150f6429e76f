"""Shards (--shard K/N) run as processes side by side on one quota per scope, one killed and
resumed, then merged: the same results as one run, item for item."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.cli.world import numbers_in, read, write_csv
from tests.conftest import CLI, Sandbox, cli_env, run_cli

OP = "BatchGetFlowAssociation"
OTHER = "111111111111"
TEMPLATE = "arn:aws:iam::{account}:role/ConnectBulk"
# Three quota scopes: two accounts (one through the role template), two regions.
SCOPES = (("123456789012", "us-east-1"), ("123456789012", "eu-west-2"), (OTHER, "eu-west-2"))
PACING = ("--rate", "10", "--burst", "5")
COMPARED = ["input_row", "instance_id", "item_key", "phone_number_arn", "flow_id", "flow_name",
            "associated", "region", "account_id", "batch_id"]


@pytest.fixture
def estate(sandbox: Sandbox, tmp_path: Path) -> Path:
    rows = []
    for seed, (account, region) in enumerate(SCOPES, 1):
        rows += numbers_in(sandbox, account, region, seed, instances=seed,
                           numbers_per_instance=120)
    sandbox.faults(quota=[f"{OP}=10/5"])  # per operation, account and region, as AWS counts
    return write_csv(tmp_path / "estate.csv", ["instance_id", "phone_number"], rows)


def _throttled(sandbox: Sandbox) -> dict[str, int]:
    return sandbox.stats().get("throttled_by_scope", {})


def _shard(sandbox: Sandbox, path: Path, out: Path, k: int,
           **env: str) -> subprocess.Popen[str]:
    shard = [] if "JOB_COMPLETION_INDEX" in env else ["--shard", f"{k}/3"]
    return subprocess.Popen(
        [*CLI, "run", "flow-associations", str(path), "--endpoint-url", sandbox.url,
         "--out", str(out), "--run-id", "nightly", "--role-arn-template", TEMPLATE,
         *PACING, *shard],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        env=cli_env(**env))


def _shards_run(sandbox: Sandbox, estate: Path, out: Path, ks: tuple[int, ...],
                n: int) -> list[Path]:
    """Shards ``ks`` of ``n`` run one after the other to the end; their run directories."""
    for k in ks:
        done = run_cli("run", "flow-associations", str(estate), "--endpoint-url", sandbox.url,
                       "--out", str(out), "--run-id", "n", "--role-arn-template", TEMPLATE,
                       "--rate", "50", "--shard", f"{k}/{n}")
        assert done.returncode == 0, done.stderr[-3000:]
    return [out / f"n-shard-{k}-of-{n}" for k in ks]


def test_three_shards_side_by_side_then_merged_equal_one_run(
    sandbox: Sandbox, estate: Path, tmp_path: Path
) -> None:
    dealt = json.loads(run_cli("plan", "flow-associations", str(estate), "--shards", "3",
                               "--json").stdout)["shards"]
    assert [s["calls"] for s in dealt] == [6, 4, 2]  # 3, 2 and 1 instances of 120 numbers
    assert sorted((sc["account_id"], sc["region"]) for s in dealt for sc in s["scopes"]) == \
        sorted(SCOPES)

    before = _throttled(sandbox)
    whole = run_cli("run", "flow-associations", str(estate), "--endpoint-url", sandbox.url,
                    "--out", str(tmp_path / "one"), "--run-id", "whole", "--role-arn-template",
                    TEMPLATE, *PACING)
    assert whole.returncode == 0, whole.stderr[-3000:]
    single = {k: v - before.get(k, 0) for k, v in _throttled(sandbox).items()}

    out = tmp_path / "shards"
    before = _throttled(sandbox)
    processes = [
        _shard(sandbox, estate, out, 0),
        # killed by SIGKILL once its first answers are durable; resumed below
        _shard(sandbox, estate, out, 1, CONNECT_BULK_CRASH_AT="wal-synced:1"),
        # K and N from the scheduler's environment, as a Kubernetes Indexed Job gives them
        _shard(sandbox, estate, out, 2, JOB_COMPLETION_INDEX="2", CONNECT_BULK_SHARDS="3"),
    ]
    codes = [p.wait(timeout=180) for p in processes]
    for process in processes:
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()
        process.stderr.close()
    assert codes[0] == codes[2] == 0 and codes[1] == -9, codes
    dirs = [out / f"nightly-shard-{k}-of-3" for k in range(3)]
    resumed = run_cli("resume", str(dirs[1]))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    sharded = {k: v - before.get(k, 0) for k, v in _throttled(sandbox).items()}
    for scope, throttled in sharded.items():  # each scope's limiter lives in one process
        assert throttled <= single.get(scope, 0) + 2, (scope, throttled, single)

    merged = tmp_path / "merged"
    result = run_cli("merge", *map(str, dirs), "--out", str(merged), "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    one = read(tmp_path / "one" / "whole" / "results.parquet").select(COMPARED)
    joined = read(merged / "results.parquet").select(COMPARED)
    assert joined.height == one.height == 720
    assert joined.sort("input_row").equals(one.sort("input_row"))
    summary = json.loads(run_cli("status", str(merged), "--json").stdout)
    assert (summary["state"], summary["items_succeeded"], summary["items_pending"]) == (
        "succeeded", 720, 0)
    shard_calls = [json.loads((d / "summary.json").read_text())["calls"][OP]["made"]
                   for d in dirs]
    assert summary["calls"][OP]["made"] == sum(shard_calls)  # every shard's calls, summed
    # The merged directory is a run: resumed, it finds nothing to do.
    made = sandbox.stats()["calls"].get(OP, 0)
    assert run_cli("resume", str(merged)).returncode == 0
    assert sandbox.stats()["calls"].get(OP, 0) == made


def test_merge_refuses_a_missing_or_unfinished_shard(
    sandbox: Sandbox, estate: Path, tmp_path: Path
) -> None:
    out = tmp_path / "shards"
    dirs = [str(d) for d in _shards_run(sandbox, estate, out, (0, 1), 3)]
    missing = run_cli("merge", *dirs, "--out", str(tmp_path / "m"))
    assert missing.returncode == 2
    assert "missing 2" in missing.stderr
    assert not (tmp_path / "m" / "run.json").exists()
    whole = run_cli("run", "flow-associations", str(estate), "--endpoint-url", sandbox.url,
                    "--out", str(out), "--run-id", "w", "--role-arn-template", TEMPLATE,
                    "--rate", "50")
    assert whole.returncode == 0
    not_a_shard = run_cli("merge", *dirs, str(out / "w"), "--out", str(tmp_path / "m"))
    assert not_a_shard.returncode == 2 and "not a shard" in not_a_shard.stderr


@pytest.mark.parametrize(("given", "message"), [("3/3", "K must be 0 to N-1"),
                                                ("a/b", "give K/N")])
def test_a_bad_shard_is_a_usage_error(tmp_path: Path, given: str, message: str) -> None:
    path = write_csv(tmp_path / "in.csv", ["instance_id", "phone_number"], [["a", "b"]])
    result = run_cli("plan", "flow-associations", str(path), "--shard", given)
    assert result.returncode == 2 and message in result.stderr


def test_shards_from_the_environment_need_an_index_and_a_size(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", ["instance_id", "phone_number"], [["a", "b"]])
    result = run_cli("plan", "flow-associations", str(path), CONNECT_BULK_SHARDS="3")
    assert result.returncode == 2 and "AWS_BATCH_JOB_ARRAY_INDEX" in result.stderr
    indexed = run_cli("plan", "flow-associations", str(path), "--json",
                      CONNECT_BULK_SHARDS="3", AWS_BATCH_JOB_ARRAY_INDEX="1")
    assert json.loads(indexed.stdout)["shard"] == "1/3"
    # An array without its size would have every task do the whole input.
    unsized = run_cli("plan", "flow-associations", str(path), JOB_COMPLETION_INDEX="0")
    assert unsized.returncode == 2 and "CONNECT_BULK_SHARDS" in unsized.stderr
    given = run_cli("plan", "flow-associations", str(path), "--shard", "0/1", "--json",
                    JOB_COMPLETION_INDEX="0")
    assert json.loads(given.stdout)["shard"] == "0/1"



def test_a_damaged_shard_file_is_one_line_and_leaves_no_merge(
    sandbox: Sandbox, estate: Path, tmp_path: Path
) -> None:
    first, second = _shards_run(sandbox, estate, tmp_path / "shards", (0, 1), 2)
    (second / "results.parquet").write_bytes(b"PAR1 torn")
    result = run_cli("merge", str(first), str(second), "--out", str(tmp_path / "m"))
    assert result.returncode == 2, result.stderr
    assert "results.parquet" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "m").exists()
