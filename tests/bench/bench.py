"""connect-bulk's benchmarks (SPEC §9): quota fidelity, peers on the same work, engine overhead,
scale, and start-up. Run with ``make bench``; it prints a Markdown table of ratios measured in
this one run, which the README's Performance section quotes.

Every scenario talks to its own sandbox process on loopback. Rates are measured on the
sandbox's side: a poller samples ``/_sandbox/stats`` every 20 ms, and a rate is successful calls
divided by the time from the first call to the last.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from connect_bulk.pipeline.limits import AdaptiveRate

OP = "BatchGetFlowAssociation"
#: what flow-associations asks once per instance (its alias, its flows' names)
LOOK_UPS = ("DescribeInstance", "ListContactFlows")
CREDS = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
ENV = {k: v for k, v in os.environ.items()
       if not k.startswith(("AWS_", "CONNECT_BULK_")) and k != "JOB_COMPLETION_INDEX"} | {
    "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
PY = sys.executable
BURST_S = 2.5  # the sandbox quotas' burst, in seconds of their rate
ROUNDS = 5  # of the overhead rows
CLI = [PY, "-m", "connect_bulk.pipeline"]


class Sandbox:
    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [*CLI, "sandbox", "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV,
        )
        assert self.process.stdout is not None
        self.url = self.process.stdout.readline().split()[1]

    def control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}/_sandbox/{path}", data=data,
                                         method="GET" if data is None else "POST")
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.load(response)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)
        assert self.process.stdout is not None
        self.process.stdout.close()

    def world(self, instances: int, per_instance: int) -> list[tuple[str, list[str]]]:
        """Seed, then read back (instance ARN, number IDs) through the API."""
        import boto3

        made = self.control("seed", {"instances": instances, "numbers_per_instance": per_instance,
                                     "seed": 1})
        connect = boto3.client("connect", endpoint_url=self.url, region_name="us-east-1", **CREDS)
        world = []
        for instance in made["instances"]:
            ids, token = [], None
            while True:
                kwargs: dict[str, Any] = {"InstanceId": instance["id"], "MaxResults": 1000}
                if token:
                    kwargs["NextToken"] = token
                page = connect.list_phone_numbers_v2(**kwargs)
                ids += [n["PhoneNumberArn"] for n in page["ListPhoneNumbersSummaryList"]]
                token = page.get("NextToken")
                if not token:
                    break
            world.append((instance["arn"], ids))
        return world


class Window:
    """Samples the sandbox's counters while some work runs; the rate is successful calls over
    the time from the first call seen to the last."""

    def __init__(self, sandbox: Sandbox, target: int, ops: tuple[str, ...] = (OP,)) -> None:
        self.sandbox, self.target, self.ops = sandbox, target, ops
        #: the process making the calls, once started (``watch``): its CPU while calling
        self.pid: int | None = None
        self.cpu: list[tuple[float, float]] = []  # (all its threads, its main thread)
        base = sandbox.control("stats")
        self.base = (self._ok(base), self._sum(base, "calls"), self._sum(base, "throttled"))
        self.first: float | None = None
        self.last: float | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _sum(self, stats: dict[str, dict[str, int]], kind: str) -> int:
        return sum(stats[kind].get(op, 0) for op in self.ops)

    def _ok(self, stats: dict[str, dict[str, int]]) -> int:
        return self._sum(stats, "calls") - sum(self._sum(stats, kind)
                                               for kind in ("throttled", "errors", "dropped"))

    def _poll(self) -> None:
        while not self.done.is_set():
            stats = self.sandbox.control("stats")
            now = time.perf_counter()
            ok = self._ok(stats) - self.base[0]
            if ok > 0 and self.first is None:
                self.first = now
                self.cpu.append(process_cpu(self.pid))
            if ok >= self.target and self.last is None:
                self.last = now
                self.stats = stats
                self.cpu.append(process_cpu(self.pid))
                return
            time.sleep(0.02)

    def watch(self, pid: int) -> None:
        self.pid = pid

    def finish(self) -> dict[str, float]:
        self.thread.join(timeout=600)
        self.done.set()
        stats = self.sandbox.control("stats")
        made = self._sum(stats, "calls") - self.base[1]
        throttled = self._sum(stats, "throttled") - self.base[2]
        assert self.first is not None and self.last is not None, "the work did not finish"
        return {"rate": self.target / max(self.last - self.first, 1e-9),
                "throttled": throttled / max(made, 1), "made": made,
                "cpu_calling_s": self.cpu[1][0] - self.cpu[0][0],
                "cpu_calling_main_s": self.cpu[1][1] - self.cpu[0][1]}


def process_cpu(pid: int | None) -> tuple[float, float]:
    """CPU seconds a process has used so far: all its threads, and its main thread (the
    event loop's: the others are the worker threads writing files, and Polars'); zeros when
    none is watched."""
    if pid is None:
        return 0.0, 0.0

    def used(stat: str) -> float:
        fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    return used(f"/proc/{pid}/stat"), used(f"/proc/{pid}/task/{pid}/stat")


def write_input(path: Path, world: list[tuple[str, list[str]]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["instance_id", "phone_number"])
        for arn, ids in world:
            writer.writerows([arn, i] for i in ids)
    return path


def batches(world: list[tuple[str, list[str]]]) -> list[tuple[str, list[str]]]:
    return [(arn.rsplit("/", 1)[1], ids[i:i + 100]) for arn, ids in world
            for i in range(0, len(ids), 100)]


# -- the runners: connect-bulk and what users write instead -----------------------------------

def run_connect_bulk(sandbox: Sandbox, path: Path, *args: str, state_dir: str | None = None,
                     watch: Callable[[int], None] | None = None) -> dict[str, Any]:
    """One run; it learns from scratch unless given the ``state_dir`` of an earlier run.
    Returns its summary and the CPU seconds it used."""
    out = tempfile.mkdtemp(prefix="bench-")
    process = subprocess.Popen(
        [*CLI, "run", "flow-associations", str(path), "--endpoint-url",
         sandbox.url, "--out", out, "--run-id", "b", "--log-format", "json", "--no-progress",
         "--state-dir", state_dir or tempfile.mkdtemp(prefix="bench-state-"), *args],
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    if watch is not None:
        watch(process.pid)
    _, _, usage = os.wait4(process.pid, 0)
    summary: dict[str, Any] = json.loads((Path(out) / "b" / "summary.json").read_text())
    return summary | {"cpu_s": usage.ru_utime + usage.ru_stime}


def run_sequential_boto3(sandbox: Sandbox, work: list[tuple[str, list[str]]]) -> None:
    import boto3

    client = boto3.client("connect", endpoint_url=sandbox.url, region_name="us-east-1", **CREDS)
    for instance, ids in work:
        client.batch_get_flow_association(InstanceId=instance, ResourceIds=ids)


def run_threads_adaptive(sandbox: Sandbox, work: list[tuple[str, list[str]]]) -> None:
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "adaptive", "max_attempts": 20}, max_pool_connections=16)
    client = boto3.client("connect", endpoint_url=sandbox.url, region_name="us-east-1",
                          config=config, **CREDS)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda b: client.batch_get_flow_association(
            InstanceId=b[0], ResourceIds=b[1]), work))


def run_aiometer(sandbox: Sandbox, work: list[tuple[str, list[str]]], rate: float) -> None:
    import aiobotocore.session
    import aiometer
    from botocore.config import Config

    async def main() -> None:
        session = aiobotocore.session.get_session()
        config = Config(retries={"mode": "standard", "max_attempts": 20},
                        max_pool_connections=16)
        async with session.create_client("connect", endpoint_url=sandbox.url,
                                         region_name="us-east-1", config=config,
                                         **CREDS) as client:
            async def one(batch: tuple[str, list[str]]) -> None:
                await client.batch_get_flow_association(InstanceId=batch[0],
                                                        ResourceIds=batch[1])

            await aiometer.run_on_each(one, work, max_at_once=16, max_per_second=rate)

    asyncio.run(main())


def run_bare_aiobotocore(sandbox: Sandbox, work: list[tuple[str, list[str]]],
                         concurrency: int, watch: Callable[[int], None] | None = None,
                         *, through: str = "aiobotocore") -> dict[str, float]:
    """The bare loop in a process of its own, as connect-bulk runs: its CPU is its own (the
    bench's poller thread is not in it). It lingers half a second after its last call, so
    that the poller reads its CPU before it exits. ``through="caller"``: the same loop makes
    its calls through connect-bulk's ``Caller`` (limiter, slots, retries, counters), and
    nothing else of the engine."""
    listed = Path(tempfile.mkdtemp()) / "work.json"
    listed.write_text(json.dumps(work))
    process = subprocess.Popen([PY, __file__, "--bare-child", sandbox.url, str(concurrency),
                                str(listed), through], env=ENV)
    if watch is not None:
        watch(process.pid)
    _, status, usage = os.wait4(process.pid, 0)
    assert status == 0, "the bare loop failed"
    return {"cpu_s": usage.ru_utime + usage.ru_stime}


def bare_child(url: str, concurrency: int, listed: Path, through: str) -> None:
    import aiobotocore.session
    from botocore.config import Config

    work = [tuple(batch) for batch in json.loads(listed.read_text())]
    # The calls flow-associations makes: an instance's alias and flows (for the names), then
    # its numbers' flows; all the look-ups first, as a script would.
    instances = list(dict.fromkeys(instance for instance, _ in work))
    queue = list(work)

    async def loop(call: Callable[..., Any]) -> None:
        async def look_up() -> None:
            while instances:
                instance = instances.pop()
                await call("DescribeInstance", InstanceId=instance)
                await call("ListContactFlows", InstanceId=instance, MaxResults=1000)

        async def worker() -> None:
            while queue:
                instance, ids = queue.pop()
                await call("BatchGetFlowAssociation", InstanceId=instance, ResourceIds=ids,
                           ResourceType="VOICE_PHONE_NUMBER")

        await asyncio.gather(*(look_up() for _ in range(concurrency)))
        await asyncio.gather(*(worker() for _ in range(concurrency)))

    async def bare() -> None:
        session = aiobotocore.session.get_session()
        config = Config(retries={"total_max_attempts": 1}, max_pool_connections=concurrency)
        async with session.create_client("connect", endpoint_url=url,
                                         region_name="us-east-1", config=config,
                                         **CREDS) as client:
            await loop(lambda operation, **params: getattr(
                client, xform_name(operation))(**params))

    async def through_caller() -> None:
        from connect_bulk.pipeline.aws import AwsSettings, Caller

        settings = AwsSettings(region="us-east-1", endpoint_url=url, rate=100_000,
                               burst=1000, adaptive=False, concurrency=concurrency)
        async with Caller(settings) as caller:
            await loop(lambda operation, **params: caller.call(
                "connect", operation, region="us-east-1", account="123456789012", **params))

    from botocore import xform_name

    asyncio.run(bare() if through == "aiobotocore" else through_caller())
    time.sleep(0.5)


def measure(sandbox: Sandbox, target: int, run: Callable[[], Any]) -> dict[str, Any]:
    window = Window(sandbox, target)
    result = run()
    return window.finish() | {"result": result}


def measure_watched(sandbox: Sandbox, target: int,
                    run: Callable[[Callable[[int], None]], Any],
                    ops: tuple[str, ...] = (OP,)) -> dict[str, Any]:
    """As ``measure``, for a run in a process of its own that it tells the window of."""
    window = Window(sandbox, target, ops)
    result = run(window.watch)
    return window.finish() | {"result": result}


def row(name: str, figures: dict[str, Any], quota: float, note: str = "") -> list[str]:
    return [name, f"{figures['rate']:.2f}", f"{figures['rate'] / quota:.3f}",
            f"{figures['throttled']:.1%}", f"{int(figures['made'])}", note]


# -- scenarios --------------------------------------------------------------------------------

def quota_and_peers(rate: float, calls: int, rows: list[list[str]]) -> None:
    """Against a quota of R/s with burst 2.5 R and 50 ms latency: every setting a user may
    pick, two runs sharing the quota, a run that starts from what the last one learned, and
    what users write instead. Each connect-bulk run learns from scratch (a state directory of
    its own) unless it says otherwise."""
    burst = BURST_S * rate
    sandbox = Sandbox("--quota", f"{OP}={rate:g}/{burst:g}", "--latency-ms", "50")
    try:
        world = sandbox.world(instances=calls // 30, per_instance=3000)
        path = write_input(Path(tempfile.mkdtemp()) / "in.csv", world)
        over = ["--rate", f"{5 * rate:g}"]
        runs = settings(sandbox, world, path, rate)
        state = tempfile.mkdtemp(prefix="bench-state-")
        runs |= {
            f"`--rate {5 * rate:g}`, first run (learns the rate)":
                lambda: run_connect_bulk(sandbox, path, *over, state_dir=state),
            f"`--rate {5 * rate:g}`, next run (starts from the learned rate)":
                lambda: run_connect_bulk(sandbox, path, *over, state_dir=state),
            "boto3, sequential loop": lambda: run_sequential_boto3(sandbox, batches(world)),
            "boto3, 16 threads, adaptive retry mode": lambda: run_threads_adaptive(
                sandbox, batches(world)),
            f"aiobotocore + aiometer max_per_second={rate:g}": lambda: run_aiometer(
                sandbox, batches(world), rate),
        }
        measure_each(sandbox, world, runs, rate, rows)
    finally:
        sandbox.stop()
    aws_default(rows)


def settings(sandbox: Sandbox, world: list[tuple[str, list[str]]], path: Path,
             rate: float) -> dict[str, Callable[[], Any]]:
    """The settings a user may pick against a quota of ``rate`` with burst 2.5 times it."""
    burst = BURST_S * rate
    told, over = ["--rate", f"{rate:g}", "--burst", f"{burst:g}"], ["--rate", f"{5 * rate:g}"]
    return {
        f"`--rate {rate:g} --burst {burst:g}` (told the truth)":
            lambda: run_connect_bulk(sandbox, path, *told),
        f"`--rate {rate:g}` (default burst)":
            lambda: run_connect_bulk(sandbox, path, "--rate", f"{rate:g}"),
        f"`--rate {5 * rate:g}` (5x over, default burst)":
            lambda: run_connect_bulk(sandbox, path, *over),
        f"`--rate {5 * rate:g} --burst {5 * burst:g}` (5x over, proportional burst)":
            lambda: run_connect_bulk(sandbox, path, *over, "--burst", f"{5 * burst:g}"),
        f"two runs sharing the quota, each `--rate {rate:g} --burst {burst:g}`":
            lambda: run_neighbours(sandbox, world, *told),
        f"two runs of one host sharing the quota, each `--rate {rate:g} --burst {burst:g}`":
            lambda: run_neighbours(sandbox, world, *told, one_host=True),
        f"two runs sharing the quota, each `--rate {5 * rate:g}` (5x over)":
            lambda: run_neighbours(sandbox, world, *over),
        f"two runs of one host sharing the quota, each `--rate {5 * rate:g}` (5x over)":
            lambda: run_neighbours(sandbox, world, *over, one_host=True),
    }


def measure_each(sandbox: Sandbox, world: list[tuple[str, list[str]]],
                 runs: dict[str, Callable[[], Any]], rate: float, rows: list[list[str]]) -> None:
    for name, run in runs.items():
        time.sleep(BURST_S)  # the quota's bucket full again, as for a first run
        figures = measure(sandbox, len(batches(world)), run)
        shares = figures["result"] if name.startswith("two runs") else None
        note = each_share(shares, rate) if shares else ""
        rows.append(row(name, figures, rate, note))


def low_quota(rate: float, calls: int, rows: list[list[str]]) -> None:
    """The settings again against a low quota (R/s, burst 2.5 R, 50 ms), where a second is a
    few calls."""
    sandbox = Sandbox("--quota", f"{OP}={rate:g}/{BURST_S * rate:g}", "--latency-ms", "50")
    try:
        world = sandbox.world(instances=calls // 30, per_instance=3000)
        path = write_input(Path(tempfile.mkdtemp()) / "in.csv", world)
        measure_each(sandbox, world, settings(sandbox, world, path, rate), rate, rows)
    finally:
        sandbox.stop()


def aws_default(rows: list[list[str]], calls: int = 60) -> None:
    """AWS's documented default quota, 2/s burst 5, 100 ms latency, default options."""
    sandbox = Sandbox("--quota", f"{OP}=2/5", "--latency-ms", "100")
    try:
        world = sandbox.world(instances=calls // 30, per_instance=3000)
        path = write_input(Path(tempfile.mkdtemp()) / "in.csv", world)
        measure_each(sandbox, world, {
            "AWS default quota 2/s burst 5, 100 ms, default options":
                lambda: run_connect_bulk(sandbox, path),
            "two runs sharing the AWS default quota, default options":
                lambda: run_neighbours(sandbox, world),
            "two runs of one host sharing the AWS default quota, default options":
                lambda: run_neighbours(sandbox, world, one_host=True),
        }, 2, rows)
    finally:
        sandbox.stop()


def neighbours(rate: float, calls: int, repeat: int, rows: list[list[str]]) -> None:
    """The neighbours row alone, ``repeat`` times against one sandbox: the row that moves most
    from run to run, measured often enough to say how often it holds."""
    burst = BURST_S * rate
    sandbox = Sandbox("--quota", f"{OP}={rate:g}/{burst:g}", "--latency-ms", "50")
    try:
        world = sandbox.world(instances=calls // 30, per_instance=3000)
        told = ["--rate", f"{rate:g}", "--burst", f"{burst:g}"]
        for attempt in range(repeat):
            time.sleep(BURST_S)
            figures = measure(sandbox, len(batches(world)),
                              lambda: run_neighbours(sandbox, world, *told))
            note = each_share(figures["result"], rate)
            rows.append(row(f"two runs sharing the quota ({attempt + 1} of {repeat})", figures,
                            rate, note))
    finally:
        sandbox.stop()


def each_share(shares: list[float], rate: float) -> str:
    """Two neighbours' rates as shares of the quota, for a row's note."""
    return " / ".join(f"{share / rate:.2f} R" for share in shares) + " each"


def run_neighbours(sandbox: Sandbox, world: list[tuple[str, list[str]]],
                   *args: str, one_host: bool = False) -> list[float]:
    """Two runs at once on one quota, each over half of the world; each one's rate (its
    calls that went through over its own working time). Each learns from scratch in a state
    directory of its own, as runs of two hosts, or, ``one_host``, in one they share (a fresh
    one, nothing learned in it yet), as two runs of one host by default."""
    half = len(world) // 2
    paths = [write_input(Path(tempfile.mkdtemp()) / "in.csv", part)
             for part in (world[:half], world[half:])]
    state = tempfile.mkdtemp(prefix="bench-state-") if one_host else None
    with ThreadPoolExecutor(2) as pool:
        summaries = list(pool.map(
            lambda p: run_connect_bulk(sandbox, p, *args, state_dir=state), paths))
    rates = []
    for summary in summaries:
        calls = summary["calls"][OP]
        rates.append((calls["made"] - calls["throttled"]) / summary["elapsed_s"])
    return rates


def overhead(calls: int, concurrency: int, rows: list[list[str]]) -> dict[str, float]:
    """No quota, no latency: the engine against a bare aiobotocore loop making the same calls
    (the instances' look-ups, then the numbers') at the same concurrency, each in a process
    of its own; a call is any of them. ``ROUNDS`` rounds each run every variant at both sizes,
    and a figure is the median of the rounds' (a ratio, of the ratios within each round). CPU
    a call is
    measured twice: while calling (the process's CPU from its first call to its last, over the
    calls: the per-call path, start-up and the final files left out, as the bare loop's are),
    and over the whole run (the CPU of a run of 4x the calls less that of the run, over the
    calls in between: reading and planning the input and writing the final files are in it,
    start-up and imports cancel out)."""
    sandbox = Sandbox()
    try:
        world = sandbox.world(instances=4 * calls // 20, per_instance=2000)
        small = world[: len(world) // 4]
        # Every call counts, on both sides: the numbers' and the instances' look-ups.
        n = len(batches(small)) + len(LOOK_UPS) * len(small)
        paths = {size: write_input(Path(tempfile.mkdtemp()) / "in.csv", part)
                 for size, part in (("small", small), ("large", world))}
        fast = ["--rate", "100000", "--burst", "1000", "--concurrency", str(concurrency)]
        warm = tempfile.mkdtemp(prefix="bench-state-")
        run_connect_bulk(sandbox, paths["small"], *fast, state_dir=warm)  # learns what held

        def runs(size: str) -> dict[str, Callable[[Callable[[int], None]], Any]]:
            work = small if size == "small" else world
            return {
                "bare": lambda watch: run_bare_aiobotocore(sandbox, batches(work), concurrency,
                                                           watch),
                "caller": lambda watch: run_bare_aiobotocore(sandbox, batches(work),
                                                             concurrency, watch,
                                                             through="caller"),
                "fixed": lambda watch: run_connect_bulk(sandbox, paths[size], *fast,
                                                        "--no-adaptive", watch=watch),
                "adaptive": lambda watch: run_connect_bulk(sandbox, paths[size], *fast,
                                                           watch=watch),
                "learned": lambda watch: run_connect_bulk(sandbox, paths[size], *fast,
                                                          state_dir=warm, watch=watch),
            }

        # ``ROUNDS`` rounds, each runs every variant at both sizes; a ratio is taken within a
        # round (against the bare loop's runs of that round), and the median is given.
        # The machine's speed drifts by half from one minute to the next (a run's CPU a call
        # went from 1.2 to 2.2 ms within one such series): runs far apart in time are not
        # compared.
        rounds = [{size: {name: measure_watched(sandbox, n if size == "small" else 4 * n, run,
                                                (OP, *LOOK_UPS))
                          for name, run in runs(size).items()}
                   for size in ("small", "large")} for _ in range(ROUNDS)]

        Round = dict[str, dict[str, Any]]

        def rate(one: Round, name: str) -> float:
            return float(one["small"][name]["rate"])

        def calling(one: Round, name: str) -> float:
            return float(one["large"][name]["cpu_calling_s"]) / (4 * n)

        def off_loop(one: Round, name: str) -> float:
            """What the other threads took while calling: the engine's file writes (the
            log's fsyncs, the parts), and Polars' own threads encoding them."""
            return calling(one, name) - one["large"][name]["cpu_calling_main_s"] / (4 * n)

        def whole(one: Round, name: str) -> float:
            """CPU a call of the calls the large run makes beyond the small one."""
            return (one["large"][name]["result"]["cpu_s"]
                    - one["small"][name]["result"]["cpu_s"]) / (3 * n)

        def median(of: Callable[[Round, str], float], name: str) -> float:
            return statistics.median(of(one, name) for one in rounds)

        def to_bare(of: Callable[[Round, str], float], name: str) -> float:
            return statistics.median(of(one, name) / of(one, "bare") for one in rounds)

        labels = {
            "bare": f"bare aiobotocore, {concurrency} workers",
            "caller": f"the same loop through connect-bulk's Caller, {concurrency} workers "
                      "(limiter, slots, retries, counters; no job, no journal)",
            "fixed": f"connect-bulk --concurrency {concurrency} --no-adaptive",
            "adaptive": f"connect-bulk --concurrency {concurrency}, adaptive from scratch "
                        f"(slow start from {AdaptiveRate.START_RATE:g}/s)",
            "learned": f"connect-bulk --concurrency {concurrency}, adaptive from the rate the "
                       "last run held",
        }
        for name, label in labels.items():
            rows.append([
                label, f"{median(rate, name):.1f}", f"{to_bare(rate, name):.3f}", "", str(n),
                f"CPU a call: {median(calling, name) * 1000:.2f} ms while calling "
                f"({to_bare(calling, name):.2f}x; {median(off_loop, name) * 1000:.2f} ms of it "
                f"off the event loop's thread), {median(whole, name) * 1000:.2f} ms over the "
                f"whole run ({to_bare(whole, name):.2f}x)"])
        return {"bare": median(rate, "bare"), "engine": median(rate, "fixed")}
    finally:
        sandbox.stop()


def overhead_with_latency(latency_ms: int, concurrency: int, rows: list[list[str]]) -> None:
    """No quota, each call waiting ``latency_ms`` on the server, as AWS's do: the engine
    against the bare loop making the same calls (medians of 3, alternated). Here the calls in
    flight, not the CPU, bound the rate: what the engine holds a slot for besides its call
    shows."""
    sandbox = Sandbox("--latency-ms", str(latency_ms))
    try:
        world = sandbox.world(instances=30, per_instance=2000)
        path = write_input(Path(tempfile.mkdtemp()) / "in.csv", world)
        n = len(batches(world)) + len(LOOK_UPS) * len(world)
        fast = ["--rate", "100000", "--burst", "1000", "--concurrency", str(concurrency),
                "--no-adaptive"]
        runs: dict[str, Callable[[Callable[[int], None]], Any]] = {
            "bare": lambda watch: run_bare_aiobotocore(sandbox, batches(world), concurrency,
                                                       watch),
            "fixed": lambda watch: run_connect_bulk(sandbox, path, *fast, watch=watch),
        }
        rates: dict[str, list[float]] = {}
        for _ in range(3):
            for name, run in runs.items():
                rates.setdefault(name, []).append(
                    measure_watched(sandbox, n, run, (OP, *LOOK_UPS))["rate"])
        bare = statistics.median(rates["bare"])
        fixed = statistics.median(rates["fixed"])
        rows.append([f"bare aiobotocore, {concurrency} workers, {latency_ms} ms a call",
                     f"{bare:.1f}", "1.000", "", str(n), ""])
        rows.append([f"connect-bulk --concurrency {concurrency} --no-adaptive, {latency_ms} ms "
                     "a call", f"{fixed:.1f}", f"{fixed / bare:.3f}", "", str(n), ""])
    finally:
        sandbox.stop()


# The child's own peak: a forked child inherits its parent's high-water mark of resident
# memory (the kernel copies it with the address space, and keeps it across exec), so wait4's
# ru_maxrss would report the bench's own peak (the 1 GB strings it writes inputs with). The
# child resets its mark first (/proc/self/clear_refs) and reads VmHWM as it exits.
PEAK = (
    "import atexit, os, runpy, sys\n"
    "open('/proc/self/clear_refs', 'w').write('5')\n"
    "def peak():\n"
    "    line = next(l for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
    "    open(os.environ['BENCH_PEAK_FILE'], 'w').write(line.split()[1])\n"
    "atexit.register(peak)\n"
    "sys.argv = ['connect-bulk', *sys.argv[1:]]\n"
    "runpy.run_module('connect_bulk.pipeline', run_name='__main__')\n"
)


def peak_rss_mb(args: list[str]) -> tuple[float, float]:
    """Wall time and peak RSS of ``connect-bulk ARGS`` in a child process (its own peak)."""
    peak = Path(tempfile.mkdtemp(prefix="bench-peak-")) / "kb"
    started = time.perf_counter()
    subprocess.run([PY, "-c", PEAK, *args], env=ENV | {"BENCH_PEAK_FILE": str(peak)},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started, int(peak.read_text()) / 1024


def write_rows(path: Path, rows: int, instances: int, *, duplicates: bool = False,
               shuffled: bool = False) -> Path:
    """``rows`` numbers over ``instances`` instances (grouped by instance in ID order, or
    ``shuffled``: instances in no order, which planning must sort), or one row ``rows`` times."""
    per = rows // instances
    arns = [f"arn:aws:connect:us-east-1:123456789012:instance/{uuid.UUID(int=i + 1)}"
            for i in range(instances)]
    with path.open("w") as handle:
        handle.write("instance_id,phone_number\n")
        if shuffled:
            order = [i for i in range(instances) for _ in range(per)]
            random.Random(1).shuffle(order)
            handle.writelines(f"{arns[i]},{uuid.uuid4()}\n" for i in order)
            return path
        for arn in arns:
            if duplicates:
                handle.write(f"{arn},{uuid.UUID(int=7)}\n" * per)
            else:
                handle.writelines(f"{arn},{uuid.uuid4()}\n" for _ in range(per))
    return path


def plan_peak(path: Path, label: str, lines: list[list[str]]) -> None:
    seconds, rss = peak_rss_mb(["plan", "flow-associations", str(path), "--json"])
    lines.append([label, f"{seconds:.1f} s", f"{rss:.0f} MB peak RSS", "", "", ""])


def scale(rows: int, instances: int, lines: list[list[str]], big_rows: int) -> None:
    """Planning at every input size SPEC §9 names, and a resume of a large run."""
    folder = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    path = write_rows(folder / "big.csv", rows, instances)
    plan_peak(path, f"plan {rows:,} rows, {instances:,} instances", lines)
    mixed = write_rows(folder / "mixed.csv", rows, instances, shuffled=True)
    plan_peak(mixed, f"plan {rows:,} rows, {instances:,} instances in no order", lines)
    mixed.unlink()
    if big_rows:
        bigger = write_rows(folder / "bigger.csv", big_rows, instances)
        plan_peak(bigger, f"plan {big_rows:,} rows, {instances:,} instances", lines)
        bigger.unlink()
        same = write_rows(folder / "same.csv", big_rows, 1, duplicates=True)
        plan_peak(same, f"plan {big_rows:,} copies of one row", lines)
        same.unlink()

    # A run 99% done: started, killed before its first call, then 99% of its items written
    # as done; resume is timed to its first call.
    sandbox = Sandbox()
    try:
        out = folder / "runs"
        subprocess.run([*CLI, "run", "flow-associations", str(path),
                        "--endpoint-url", sandbox.url, "--out", str(out), "--run-id", "r"],
                       env=ENV | {"CONNECT_BULK_CRASH_AT": "first-call"},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        fake_done(out / "r")
        warm_up(sandbox)
        before = sandbox.control("stats")["calls"].get(OP)
        started = time.perf_counter()
        process = subprocess.Popen([*CLI, "resume", str(out / "r")], env=ENV,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while sandbox.control("stats")["calls"].get(OP) == before:
            time.sleep(0.01)
        first_call = time.perf_counter() - started
        process.kill()
        process.wait()
        lines.append(["resume a 99%-done 1M-item run: time to first call",
                      f"{first_call:.2f} s", "", "", "", ""])
    finally:
        sandbox.stop()


def warm_up(sandbox: Sandbox) -> None:
    """One request of each operation the resume makes, for an instance that is not there: the
    sandbox's server answers its first request to an operation a second or two late (measured:
    the resume's first call at 3.39 s against a cold sandbox, 1.42 s against a warm one), a cost
    of the sandbox that no AWS endpoint has."""
    import boto3
    from botocore import xform_name

    client = boto3.client("connect", endpoint_url=sandbox.url, region_name="us-east-1", **CREDS)
    for operation in (*LOOK_UPS, OP):
        params = {"ResourceIds": ["x"]} if operation == OP else {}
        with contextlib.suppress(client.exceptions.ResourceNotFoundException):
            getattr(client, xform_name(operation))(InstanceId="warm-up", **params)


def fake_done(run_dir: Path) -> None:
    import polars as pl
    from connect_bulk.jobs.flow_associations import FlowAssociations
    from connect_bulk.pipeline.journal import result_schema

    items = pl.read_parquet(run_dir / "parts" / "items.parquet")
    done = items.head(int(items.height * 0.99))
    schema = result_schema(FlowAssociations.result_schema)
    frame = done.select(
        "instance_id", "item_key", "input_row", "batch_id",
        pl.col("item_key").alias("phone_number_id"),
        pl.lit("arn").alias("phone_number_arn"), pl.lit(None, pl.String).alias("phone_number"),
        pl.lit("VOICE_PHONE_NUMBER").alias("resource_type"),
        pl.lit(None, pl.String).alias("flow_id"), pl.lit(False).alias("associated"),
        pl.lit("us-east-1").alias("region"), pl.lit("123456789012").alias("account_id"),
        pl.lit(1, pl.Int64).alias("attempts"),
        pl.lit(None, schema["completed_at"]).alias("completed_at"),
    )
    # every other result column (names, aliases) as nulls: the resume only counts the items
    frame = frame.with_columns(pl.lit(None, dtype).alias(name) for name, dtype in schema.items()
                               if name not in frame.columns).select(list(schema)).cast(schema)
    frame.write_parquet(run_dir / "parts" / "results-000001.parquet")


def startup(lines: list[list[str]]) -> None:
    times = []
    for _ in range(11):
        started = time.perf_counter()
        subprocess.run([*CLI, "--help"], env=ENV, stdout=subprocess.DEVNULL,
                       check=True)
        times.append(time.perf_counter() - started)
    lines.append(["connect-bulk --help (median of 11)", f"{statistics.median(times):.3f} s",
                  "", "", "", ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=20.0, help="the sandbox quota R")
    parser.add_argument("--calls", type=int, default=600, help="calls per quota scenario")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--big-rows", type=int, default=10_000_000,
                        help="the large input sizes planned (0: skip them)")
    parser.add_argument("--low-rate", type=float, default=5.0, help="the low quota")
    parser.add_argument("--low-calls", type=int, default=300, help="calls per low-quota row")
    parser.add_argument("--only", choices=["quota", "low", "neighbours", "overhead", "latency",
                                           "scale", "startup"])
    parser.add_argument("--repeat", type=int, default=5,
                        help="how many times --only neighbours measures its row")
    parser.add_argument("--bare-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_child:
        url, concurrency, listed, through = args.bare_child
        bare_child(url, int(concurrency), Path(listed), through)
        return
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, {platform.platform()}")
    # Every input, run directory and state the bench makes goes under one folder, removed at
    # the end (a full bench makes a thousand of them).
    with tempfile.TemporaryDirectory(prefix="connect-bulk-bench-") as scratch:
        tempfile.tempdir = scratch
        # Nor anything in the user's cache: a run given no --state-dir (the resume, killed
        # once it calls) keeps its learned rates and its file of runs/ there.
        ENV["XDG_CACHE_HOME"] = scratch
        try:
            measure_all(args)
        finally:
            tempfile.tempdir = None


def measure_all(args: argparse.Namespace) -> None:
    lines: list[list[str]] = []
    if args.only in (None, "quota"):
        quota_and_peers(args.rate, args.calls, lines)
    if args.only in (None, "quota", "low"):
        low_quota(args.low_rate, args.low_calls, lines)
    if args.only == "neighbours":
        neighbours(args.rate, args.calls, args.repeat, lines)
    if args.only in (None, "overhead"):
        for concurrency in (16, 64):  # the default, and a user's raised one
            overhead(600, concurrency, lines)
    if args.only in (None, "latency"):
        overhead_with_latency(100, 16, lines)
    if args.only in (None, "scale"):
        scale(args.rows, 5000, lines, args.big_rows)
    if args.only in (None, "startup"):
        startup(lines)
    print("| scenario | calls/s or time | ratio | throttled | calls made | note |")
    print("|---|---|---|---|---|---|")
    for line in lines:
        print("| " + " | ".join(line) + " |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
