"""Shared fixtures: one sandbox process for the whole session (started through the real
``connect-bulk sandbox`` command), reset before every test that asks for it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from hypothesis import settings

# `make test` runs a few examples of each property; `make test-all` many more.
settings.register_profile("default", max_examples=4, deadline=None, database=None)
settings.register_profile("all", max_examples=25, deadline=None, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

#: the command line, as a subprocess runs it
CLI = [sys.executable, "-m", "connect_bulk.pipeline"]
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
# Every attempt is the test's own: no SDK retries hiding what the sandbox answered.
NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"})


@dataclass
class Sandbox:
    url: str

    def client(self, service: str, region: str = "us-east-1", **kwargs: Any) -> Any:
        return boto3.client(
            service, endpoint_url=self.url, region_name=region,
            config=kwargs.pop("config", NO_RETRIES), **CREDENTIALS, **kwargs,
        )

    def control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}/_sandbox/{path}", data=data, method="GET" if data is None else "POST"
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)

    def stats(self) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = self.control("stats")
        return result

    def faults(self, **changes: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.control("faults", changes)
        return result

    def seed(self, **request: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.control("seed", request)
        return result

    def reset(self) -> None:
        self.control("reset", {})

    def wait_for_calls(self, operation: str, n: int, timeout_s: float = 60) -> None:
        """Block until the sandbox has seen ``n`` calls of ``operation``."""
        deadline = time.monotonic() + timeout_s
        while self.stats()["calls"].get(operation, 0) < n:
            assert time.monotonic() < deadline, f"fewer than {n} {operation} calls arrived"
            time.sleep(0.05)


def start_sandbox(*args: str) -> tuple[subprocess.Popen[str], str]:
    """Start ``connect-bulk sandbox --port 0 ARGS`` and wait for its ready line."""
    log = Path(tempfile.mkdtemp(prefix="sandbox-")) / "stderr.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [*CLI, "sandbox", "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=stderr, text=True,
            env=os.environ | {"PYTHONUNBUFFERED": "1"},
        )
    assert process.stdout is not None
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline()))  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout=60)
    if not line or not line[0].startswith("ready "):
        process.kill()
        process.wait()
        process.stdout.close()
        raise RuntimeError(f"sandbox did not start: {line!r} {log.read_text()!r}")
    return process, line[0].split()[1]


def stop_sandbox(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stdout is not None
        process.stdout.close()


@pytest.fixture(scope="session")
def sandbox_url() -> Iterator[str]:
    process, url = start_sandbox("--onboarding-seconds", "0.5")
    yield url
    stop_sandbox(process)


@pytest.fixture
def sandbox(sandbox_url: str) -> Sandbox:
    box = Sandbox(sandbox_url)
    box.reset()
    return box


@pytest.fixture(autouse=True)
def _no_real_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Nothing in the suite may reach a real account, whatever the machine's environment holds.
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    # Learned rates (SPEC §9) are each test's own, never the user's cache.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def cli_env(**extra: str) -> dict[str, str]:
    # Nothing of the machine's AWS setup, nor a scheduler's shard index (JOB_COMPLETION_INDEX of
    # a Kubernetes Indexed Job that runs CI would make every run a shard).
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "CONNECT_BULK_")) and k != "JOB_COMPLETION_INDEX"}
    return env | {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "PYTHONUNBUFFERED": "1",
    } | extra


def run_cli(*args: str, timeout: float = 180, **env: str) -> subprocess.CompletedProcess[str]:
    """``connect-bulk ARGS`` as cron would run it (no TTY): in this process, through the real
    command line (click's isolation of streams and environment), unless the test needs a
    process of its own: a crash point (SIGKILL, SIGSTOP, a signal at a named moment)."""
    if any(name.startswith("CONNECT_BULK_CRASH") for name in env):
        return subprocess.run(
            [*CLI, *args], capture_output=True, text=True,
            timeout=timeout, env=cli_env(**env), stdin=subprocess.DEVNULL,
        )
    from click.testing import CliRunner
    from connect_bulk.pipeline.cli import entry

    wanted = cli_env(**env)
    changes: dict[str, str | None] = {k: v for k, v in wanted.items() if os.environ.get(k) != v}
    changes |= {k: None for k in os.environ if k not in wanted}
    with CliRunner().isolation(env=changes) as (stdout, stderr, _):
        code = entry(list(args))
        sys.stdout.flush()
        sys.stderr.flush()
    return subprocess.CompletedProcess([*CLI, *args], code, stdout.getvalue().decode(),
                                       stderr.getvalue().decode())
