"""`connect-bulk sandbox`, run as users run it."""

from __future__ import annotations

import subprocess

import boto3

from tests.conftest import CLI, CREDENTIALS, Sandbox, start_sandbox, stop_sandbox


def test_port_0_prints_one_ready_line_and_sigterm_stops_cleanly() -> None:
    process, url = start_sandbox(
        "--seed-instances", "2", "--seed-numbers-per-instance", "30", "--seed-random", "5",
        "--quota", "ListInstances=50/50", "--latency-ms", "1",
    )
    try:
        assert url.startswith("http://127.0.0.1:")
        assert not url.endswith(":0")
        connect = boto3.client("connect", endpoint_url=url, region_name="us-east-1",
                               **CREDENTIALS)
        instances = connect.list_instances()["InstanceSummaryList"]
        assert len(instances) == 2
        faults = Sandbox(url).control("faults")
        assert faults["quota"] == ["ListInstances=50/50"]
        assert faults["latency_ms"] == 1.0
    finally:
        assert stop_sandbox(process) == 0


def test_bad_options_exit_2_with_one_line() -> None:
    for args in (["--quota", "nonsense"], ["--error-rate", "3"], ["--port", "-1"]):
        result = subprocess.run(
            [*CLI, "sandbox", "--port", "0", *args],
            capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 2, args
        assert result.stdout == ""
        (line,) = result.stderr.splitlines()  # one line, naming the option
        assert args[0].lstrip("-").split("-")[0] in line
        assert "Traceback" not in result.stderr


def test_a_taken_port_is_a_clear_error(sandbox: Sandbox) -> None:
    port = sandbox.url.rsplit(":", 1)[1]
    result = subprocess.run(
        [*CLI, "sandbox", "--port", port],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
