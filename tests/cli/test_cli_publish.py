"""--publish: a run's final files uploaded to S3 (the sandbox's) when it ends, read back with
Polars; a failed upload is exit 3, and resume publishes again."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from tests.cli.world import build_world, read, write_csv
from tests.conftest import Sandbox, run_cli

BUCKET = "nightly-outputs"


def test_the_final_files_land_in_s3_and_read_back_with_polars(sandbox: Sandbox,
                                                              tmp_path: Path) -> None:
    world = build_world(sandbox, instances=1, numbers_per_instance=5)
    path = write_csv(tmp_path / "in.csv", ["instance_id", "phone_number"],
                     [[n.instance_id, n.id] for n in world.numbers] + [["", "x"]])
    s3 = sandbox.client("s3")
    args = ["run", "flow-associations", str(path), "--endpoint-url", sandbox.url, "--region",
            "us-east-1", "--out", str(tmp_path / "out"), "--run-id", "r",
            "--publish", f"s3://{BUCKET}/connect/"]

    missing = run_cli(*args)  # no bucket yet: the run ends, its upload cannot
    assert missing.returncode == 3, missing.stderr
    line = json.loads(missing.stderr.splitlines()[-1])
    assert "NoSuchBucket" in line["message"] and "resume" in line["message"]
    assert (tmp_path / "out" / "r" / "results.parquet").is_file()

    s3.create_bucket(Bucket=BUCKET)
    again = run_cli("resume", str(tmp_path / "out" / "r"))
    assert again.returncode == 1, again.stderr  # one row rejected
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="connect/r/")
    assert sorted(o["Key"] for o in listed["Contents"]) == [
        f"connect/r/{name}" for name in ("failures.parquet", "rejects.parquet",
                                         "results.parquet", "run.json", "summary.json")]
    storage = {"aws_endpoint_url": sandbox.url, "aws_access_key_id": "testing",
               "aws_secret_access_key": "testing", "aws_region": "us-east-1",
               "aws_allow_http": "true"}
    results = pl.read_parquet(f"s3://{BUCKET}/connect/r/results.parquet",
                              storage_options=storage)
    assert results.sort("input_row").equals(
        read(tmp_path / "out" / "r" / "results.parquet").sort("input_row"))
    assert results.height == 5
    summary = json.loads(s3.get_object(Bucket=BUCKET, Key="connect/r/summary.json")["Body"]
                         .read())
    assert (summary["state"], summary["rows_rejected"]) == ("completed_with_failures", 1)


def test_a_bad_target_is_a_usage_error(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", ["instance_id", "phone_number"], [["a", "b"]])
    result = run_cli("run", "flow-associations", str(path), "--publish", "https://x/y",
                     "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "s3://BUCKET" in result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_stopped_run_publishes_nothing_and_resume_publishes(sandbox: Sandbox,
                                                             tmp_path: Path) -> None:
    world = build_world(sandbox, instances=1, numbers_per_instance=3)
    path = write_csv(tmp_path / "in.csv", ["instance_id", "phone_number"],
                     [[n.instance_id, n.id] for n in world.numbers])
    sandbox.client("s3").create_bucket(Bucket=BUCKET)
    run_dir = tmp_path / "out" / "r"
    args = ["run", "flow-associations", str(path), "--endpoint-url", sandbox.url, "--region",
            "us-east-1", "--out", str(tmp_path / "out"), "--run-id", "r",
            "--publish", f"s3://{BUCKET}/p"]
    # SIGTERM before the first call: the run stops, and no upload starts after the stop.
    stopped = run_cli(*args, CONNECT_BULK_CRASH_AT="first-call",
                      CONNECT_BULK_CRASH_SIGNAL="TERM")
    assert stopped.returncode == 130, stopped.stderr
    assert "PutObject" not in sandbox.stats()["calls"]
    assert "not_published" in (run_dir / "events.jsonl").read_text()
    # SIGTERM as the first upload is about to start: exit 130, one line, nothing uploaded.
    cut = run_cli("resume", str(run_dir), CONNECT_BULK_CRASH_AT="publishing",
                  CONNECT_BULK_CRASH_SIGNAL="TERM")
    assert cut.returncode == 130, cut.stderr
    assert "Traceback" not in cut.stderr
    assert "publishing to s3://" in json.loads(cut.stderr.splitlines()[-1])["message"]
    assert "PutObject" not in sandbox.stats()["calls"]
    assert run_cli("resume", str(run_dir)).returncode == 0
    listed = sandbox.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="p/r/")
    assert len(listed["Contents"]) == 5
