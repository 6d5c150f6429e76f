"""``connect-bulk sandbox`` and ``connect-bulk demo``. This module imports no moto: the
sandbox is an extra (``connect-bulk[sandbox]``), and without it these commands say so in one
line."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

import click

from ..edge import edge
from ..errors import UsageError
from ..options import fraction, output, run_options, with_options

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def require_sandbox() -> None:
    """The sandbox is an extra: a production install has no moto, Flask or werkzeug."""
    try:
        import moto  # noqa: F401
    except ImportError:
        raise UsageError("the sandbox is not installed: pip install "
                         "'connect-bulk[sandbox]'") from None


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; anything but loopback exposes the sandbox to the network.")
@click.option("--port", default=5050, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on; 0 picks a free one.")
@click.option("--latency-ms", default=0.0, type=click.FloatRange(min=0), help="Added latency.")
@click.option("--jitter-ms", default=0.0, type=click.FloatRange(min=0),
              help="Random extra latency, up to this.")
@click.option("--error-rate", default=0.0, callback=fraction,
              help="Share of calls answered with the operation's HTTP 500 error.")
@click.option("--drop-rate", default=0.0, callback=fraction,
              help="Share of calls whose connection is closed without an answer.")
@click.option("--quota", "quotas", multiple=True, metavar="OPERATION=RATE[/BURST]",
              help="Calls per second per operation, account and region, beyond which the call "
                   "gets HTTP 429 ThrottlingException; '*' for every operation. Repeatable.")
@click.option("--onboarding-seconds", default=2.0, show_default=True,
              type=click.FloatRange(min=0), help="How long an onboarding job stays IN_PROGRESS.")
@click.option("--seed-instances", default=0, type=click.IntRange(0, 1000),
              help="Seed this many instances at start (0: an empty world).")
@click.option("--seed-numbers-per-instance", default=100, show_default=True,
              type=click.IntRange(0, 1_000_000))
@click.option("--seed-flows-per-instance", default=3, show_default=True, type=click.IntRange(0))
@click.option("--seed-associated-fraction", default=0.8, show_default=True, callback=fraction)
@click.option("--seed-region", default="us-east-1", show_default=True)
@click.option("--seed-random", "seed_random", default=0, show_default=True,
              help="Random seed of the seeded world (same seed, same world).")
@edge
def sandbox(*, host: str, port: int, onboarding_seconds: float, **knobs: Any) -> None:
    """Serve the local Amazon Connect sandbox until stopped (Ctrl-C or SIGTERM).

    Point any AWS client at it with --endpoint-url and dummy credentials. Control it at
    /_sandbox/faults, /_sandbox/stats, /_sandbox/reset and /_sandbox/seed.
    """
    require_sandbox()
    from . import SandboxServer
    from .seed import seed_world

    faults, seed = _faults_and_seed(**knobs)
    if host not in LOOPBACK:
        click.echo(f"warning: binding {host}: the sandbox is reachable from the network", err=True)
    server = SandboxServer(host=host, port=port, faults=faults,
                           onboarding_seconds=onboarding_seconds)
    try:
        server.start()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UsageError(f"cannot listen on {host}:{port}: {reason}") from exc
    if seed is not None:
        made = seed_world(seed)
        click.echo(
            f"seeded {len(made['instances'])} instances, {made['numbers']} numbers "
            f"({made['associated']} associated) in {seed.region} in {made['seconds']}s",
            err=True,
        )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    click.echo(f"ready {server.url}")
    sys.stdout.flush()
    while not stop.wait(3600):
        pass
    server.stop()
    click.echo("sandbox stopped", err=True)


def _faults_and_seed(*, latency_ms: float, jitter_ms: float, error_rate: float,
                     drop_rate: float, quotas: tuple[str, ...], seed_instances: int,
                     seed_numbers_per_instance: int, seed_flows_per_instance: int,
                     seed_associated_fraction: float, seed_region: str,
                     seed_random: int) -> tuple[Any, Any]:
    from . import Faults, Quota, SeedRequest

    try:
        faults = Faults(latency_ms=latency_ms, jitter_ms=jitter_ms, error_rate=error_rate,
                        drop_rate=drop_rate, quotas=dict(Quota.parse(text) for text in quotas))
        seed = SeedRequest(
            region=seed_region, instances=seed_instances,
            numbers_per_instance=seed_numbers_per_instance,
            flows_per_instance=seed_flows_per_instance,
            associated_fraction=seed_associated_fraction, seed=seed_random,
        ) if seed_instances else None
    except ValueError as exc:
        raise UsageError(f"--{exc!s}" if str(exc).startswith("quota") else str(exc)) \
            from exc
    return faults, seed


@click.command()
@click.option("--rows", default=3000, show_default=True, type=click.IntRange(3, 200_000),
              help="Phone numbers in the demo world.")
@click.option("--out", default="data/runs", show_default=True, type=click.Path(file_okay=False))
@with_options([o for o in run_options(overrides=True) if o.name in ("log_format", "progress")])
@edge
def demo(*, rows: int, out: str, log_format: str | None, progress: bool | None) -> None:
    """Start a sandbox in-process, seed it, write sample inputs, run the jobs against it, and
    print where the outputs are."""
    require_sandbox()
    from .demo import run_demo

    fmt, bar = output(log_format, progress)
    code = run_demo(rows=rows, out=out, progress=bar, log_format=fmt,
                    echo=lambda text: click.echo(text, err=True))
    # The demo's failures and rejects are on purpose: it succeeded if the run finished.
    sys.exit(0 if code in (0, 1) else code)


