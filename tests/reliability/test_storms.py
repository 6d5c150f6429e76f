"""Fault storms, stops under storms, and what must never leak."""

from __future__ import annotations

import http.server
import json
import os
import signal
import stat
import subprocess
import threading
from pathlib import Path

import polars as pl

from tests.cli.world import read, seeded_input
from tests.conftest import CLI, Sandbox, cli_env, run_cli, start_sandbox, stop_sandbox

OP = "BatchGetFlowAssociation"


def _input(sandbox: Sandbox, path: Path, *, instances: int = 4, per_instance: int = 500) -> Path:
    return seeded_input(sandbox, path, instances=instances, per_instance=per_instance, seed=3)


def _run(sandbox: Sandbox, path: Path, out: Path, *args: str,
         **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli("run", "flow-associations", str(path), "--endpoint-url", sandbox.url,
                   "--out", str(out), "--run-id", "s", *args, **env)


def test_a_storm_of_every_fault_ends_done_or_retryable_and_retry_completes(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    path = _input(sandbox, tmp_path / "in.csv")
    # A quota a tenth of --rate, a fifth of answers 500, some connections dropped, and answers
    # slower than the client waits.
    sandbox.faults(quota=[f"{OP}=5/2"], error_rate=0.2, drop_rate=0.05, jitter_ms=1500)
    result = _run(sandbox, path, tmp_path / "out", "--rate", "50", "--max-attempts", "3",
                  "--call-timeout", "1", "--concurrency", "8")
    assert result.returncode in (0, 1), result.stderr[-2000:]
    run_dir = tmp_path / "out" / "s"
    results, failures = read(run_dir / "results.parquet"), read(run_dir / "failures.parquet")
    assert results.height + failures.height == 2000
    assert failures.is_empty() or all(failures["retryable"])
    assert set(failures["error_code"]) <= {"ThrottlingException", "InternalServiceException",
                                           "ConnectionClosedError", "ReadTimeoutError"}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["calls"][OP]["throttled"] > 0 and summary["calls"][OP]["retried"] > 0

    sandbox.faults(quota=[], error_rate=0.0, drop_rate=0.0, jitter_ms=0)
    retried = run_cli("retry", str(run_dir))
    assert retried.returncode == 0, retried.stderr[-2000:]
    results = read(run_dir / "results.parquet")
    assert results.height == 2000 and read(run_dir / "failures.parquet").height == 0
    assert results.select(pl.struct("instance_id", "item_key").n_unique()).item() == 2000


def test_an_access_denied_storm_stops_early_with_one_message(sandbox: Sandbox,
                                                             tmp_path: Path) -> None:
    path = _input(sandbox, tmp_path / "in.csv")
    sandbox.faults(deny=[OP])
    result = _run(sandbox, path, tmp_path / "out", "--log-format", "text", "--concurrency", "2",
                  "--rate", "50")
    assert result.returncode == 3
    printed = (result.stdout + result.stderr).splitlines()
    errors = [line for line in printed if "AccessDeniedException" in line]
    assert len(errors) == 1, printed
    assert "check the IAM permissions" in errors[0]
    summary = json.loads((tmp_path / "out" / "s" / "summary.json").read_text())
    assert (summary["state"], summary["items_failed"], summary["items_pending"]) == (
        "aborted", 0, 2000)
    assert sandbox.stats()["calls"][OP] <= 12  # stopped after ten refusals, not 20 calls
    sandbox.faults(deny=[])
    assert run_cli("resume", str(tmp_path / "out" / "s")).returncode == 0


def test_sigterm_during_a_storm_writes_and_exits_130(sandbox: Sandbox, tmp_path: Path) -> None:
    path = _input(sandbox, tmp_path / "in.csv")
    sandbox.faults(quota=[f"{OP}=2/1"], error_rate=0.3)
    process = subprocess.Popen(
        [*CLI, "run", "flow-associations", str(path),
         "--endpoint-url", sandbox.url, "--out", str(tmp_path / "out"), "--run-id", "s",
         "--rate", "20"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        env=cli_env(),
    )
    sandbox.wait_for_calls(OP, 6)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 130
    run_dir = tmp_path / "out" / "s"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["state"] == "interrupted"
    sandbox.faults(quota=[], error_rate=0.0)
    assert run_cli("resume", str(run_dir)).returncode == 0
    assert read(run_dir / "results.parquet").height == 2000


FAKE_KEY_ID = "AKIAFAKEFAKEFAKE7777"
FAKE_SECRET = "SeCrEt/fake+fake+fake+fake+fake+fake+0000"
FAKE_TOKEN = "FwoGZXIvYXdzEFAKEsessionTOKENfakeFAKE9999"


def test_no_credential_ever_lands_in_a_file_or_a_log_line(sandbox: Sandbox,
                                                          tmp_path: Path) -> None:
    path = _input(sandbox, tmp_path / "in.csv", instances=1, per_instance=50)
    rows = path.read_text() + "bad,bad\n"
    path.write_text(rows)
    sandbox.faults(error_rate=0.3)
    env = {"AWS_ACCESS_KEY_ID": FAKE_KEY_ID, "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
           "AWS_SESSION_TOKEN": FAKE_TOKEN}
    outputs = []
    for log_format in ("json", "text"):
        result = run_cli("run", "flow-associations", str(path), "--endpoint-url", sandbox.url,
                         "--out", str(tmp_path / "out"), "--run-id", log_format,
                         "--log-format", log_format, "--max-attempts", "1", **env)
        assert result.returncode == 1
        outputs += [result.stdout, result.stderr]
    texts = outputs + [p.read_bytes().decode("utf-8", "replace")
                       for p in (tmp_path / "out").rglob("*") if p.is_file()]
    for text in texts:
        for secret in (FAKE_KEY_ID, FAKE_SECRET, FAKE_TOKEN, "Signature=", "X-Amz-Security"):
            assert secret not in text


def test_run_directories_are_for_their_owner_only(sandbox: Sandbox, tmp_path: Path) -> None:
    path = _input(sandbox, tmp_path / "in.csv", instances=1, per_instance=10)
    assert _run(sandbox, path, tmp_path / "out").returncode == 0
    for entry in (tmp_path / "out" / "s").rglob("*"):
        mode = stat.S_IMODE(entry.stat().st_mode)
        assert mode & 0o077 == 0, (entry, oct(mode))
    assert stat.S_IMODE((tmp_path / "out" / "s").stat().st_mode) == 0o700


def test_the_sandbox_binds_loopback_unless_told_otherwise() -> None:
    process, url = start_sandbox()
    try:
        assert url.startswith("http://127.0.0.1:")
        port = int(url.rsplit(":", 1)[1])
        listening = Path("/proc/net/tcp").read_text().splitlines()[1:]
        ours = [line.split()[1] for line in listening
                if line.split()[1].endswith(f":{port:04X}") and line.split()[3] == "0A"]
        assert ours == [f"0100007F:{port:04X}"]  # 127.0.0.1, not 0.0.0.0
    finally:
        stop_sandbox(process)
    warned = subprocess.run(
        [*CLI, "sandbox", "--host", "0.0.0.0", "--port", "70000"],
        capture_output=True, text=True, timeout=60, env=os.environ.copy(),
    )
    assert warned.returncode == 2  # the port is refused before anything binds


class _QuotingEndpoint(http.server.BaseHTTPRequestHandler):
    """Answers every request as AWS answers a signature mismatch: 403, quoting the canonical
    request back, headers (security token, credential scope, signature) included."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        quoted = "\n".join(f"{k.lower()}:{v}" for k, v in self.headers.items())
        message = ("The request signature we calculated does not match the signature you "
                   "provided. Check your AWS Secret Access Key and signing method. The "
                   f"Canonical String for this request should have been\n'POST\n{self.path}\n\n"
                   f"{quoted}\n'\nThe String-to-Sign should have been 'AWS4-HMAC-SHA256'")
        body = json.dumps({"message": message}).encode()
        self.send_response(403)
        self.send_header("x-amzn-ErrorType", "InvalidSignatureException")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST

    def log_message(self, *_args: object) -> None:
        pass


def test_secrets_quoted_back_by_aws_are_redacted_everywhere(sandbox: Sandbox,
                                                            tmp_path: Path) -> None:
    path = _input(sandbox, tmp_path / "in.csv", instances=1, per_instance=10)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _QuotingEndpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    env = {"AWS_ACCESS_KEY_ID": FAKE_KEY_ID, "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
           "AWS_SESSION_TOKEN": FAKE_TOKEN}
    try:
        outputs = []
        for log_format in ("json", "text"):
            result = run_cli("run", "flow-associations", str(path), "--endpoint-url", endpoint,
                             "--out", str(tmp_path / "out"), "--run-id", log_format,
                             "--log-format", log_format, **env)
            assert result.returncode == 3, result.stderr  # a signature error stops the run
            assert "InvalidSignatureException" in result.stdout + result.stderr
            status = run_cli("status", str(tmp_path / "out" / log_format), **env)
            outputs += [result.stdout, result.stderr, status.stdout, status.stderr]
    finally:
        server.shutdown()
        server.server_close()
    texts = outputs + [p.read_bytes().decode("utf-8", "replace")
                       for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert any("[redacted]" in text for text in texts)  # the quote was there, and masked
    for text in texts:
        for secret in (FAKE_KEY_ID, FAKE_TOKEN, FAKE_SECRET, "Signature=", "Credential="):
            assert secret not in text
