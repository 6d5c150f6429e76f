"""SIGINT and SIGTERM, from the first line of ``main`` to the last.

Python's defaults are wrong for a tool that changes production state: SIGTERM kills the
process wherever it is (a run directory left ``running``), and SIGINT raises wherever it lands.
``install`` puts one handler on both, which acts in one of three ways:

- nothing is running yet (reading the input, looking at a run): raise ``Interrupted``, which the
  command line turns into one line and exit 130;
- a run's record is being written (``deferred``): remember the signal and let the writing
  finish; the run then stops before its first call;
- the engine runs (``listening``): hand the signal to the event loop, which stops starting
  calls; a second signal cancels the calls in flight.

The event loop is told through ``call_soon_threadsafe``, which is safe from a signal handler and
wakes a loop that sleeps in ``select`` (the engine runs on anyio's asyncio backend).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A stop signal that arrived while nothing was running."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _State:
    received: int | None = None
    deferring: int = 0
    listener: Callable[[int], None] | None = None


_state = _State()


def _handle(signum: int, _frame: FrameType | None) -> None:
    if _state.received is None:
        _state.received = signum
    if _state.listener is not None:
        _state.listener(signum)
    elif not _state.deferring:
        raise Interrupted(signum)


def install() -> None:
    for signum in SIGNALS:
        signal.signal(signum, _handle)


def received() -> int | None:
    """The first stop signal this process received, if any."""
    return _state.received


@contextmanager
def deferred() -> Iterator[None]:
    """While writing a run's record: a signal is remembered, not raised."""
    _state.deferring += 1
    try:
        yield
    finally:
        _state.deferring -= 1


@contextmanager
def listening(on_signal: Callable[[int], None]) -> Iterator[None]:
    """Inside the event loop: ``on_signal(signum)`` runs in the loop for every signal, and at
    once for one that arrived before."""
    loop = asyncio.get_running_loop()
    previous = _state.listener

    def listener(signum: int) -> None:
        loop.call_soon_threadsafe(on_signal, signum)

    _state.listener = listener
    try:
        if _state.received is not None:
            on_signal(_state.received)
        yield
    finally:
        _state.listener = previous
