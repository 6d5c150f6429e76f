"""The engine: batches in, outcomes out, under every limit, until done or told to stop.

One task group: a writer task (the journal), a signal watcher, and one task per batch in
flight. A batch task starts only once a slot is free (``concurrency``); inside it, each call
waits for its rate limiter (``aws.Caller``). A stop (signal, deadline, failure rate, fatal
error) stops starting batches; the batches in flight finish, within a grace period, and
everything they answered is written.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

import anyio
from anyio.lowlevel import checkpoint

from .errors import Abandoned, AccessDenied, CallError, FatalError
from .events import EventLog
from .job import ANSWER_SLOT, AnswerSlot, Batch, Context, Failure, Job, Outcome, items_in
from .journal import Entry, Journal
from .rundir import utc_now

MIN_ITEMS_FOR_FAILURE_RATE = 200
DENIED_BATCHES_FOR_STORM = 10
#: batches a job with ``batches_per_slot`` may hold beyond its call slots, whatever
#: --concurrency: as many as 16 workers hold. More only cost CPU: at 64 workers, 256 batches in
#: flight made 14-16% fewer calls a second than 112, at 1.34-1.39x the bare loop's CPU a call
#: against 1.29-1.32x (sandbox, without latency and with 100 ms a call)
MAX_WAITING_BATCHES = 48


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    max_failure_rate: float | None = None
    deadline: datetime | None = None
    grace_s: float = 30.0


class StopReason(StrEnum):
    INTERRUPTED = "interrupted"
    DEADLINE = "deadline"
    ABORTED = "aborted"


@dataclass(slots=True)
class Stop:
    """Why a run stops, once: the first reason given wins. Whoever must act on a stop
    subscribes (``on_stop``); ``force`` (a second signal) asks to cancel the calls in flight."""

    reason: StopReason | None = None
    message: str = ""
    _on_stop: list[Callable[[], None]] = field(default_factory=list)
    _on_force: list[Callable[[], None]] = field(default_factory=list)

    def __call__(self, reason: StopReason, message: str = "") -> None:
        if self.reason is None:
            self.reason, self.message = reason, message
            for callback in self._on_stop:
                callback()

    def on_stop(self, callback: Callable[[], None]) -> None:
        self._on_stop.append(callback)
        if self.reason is not None:
            callback()

    def on_force(self, callback: Callable[[], None]) -> None:
        self._on_force.append(callback)

    def force(self) -> None:
        for callback in self._on_force:
            callback()

    def signal(self, signum: int) -> None:
        """A stop signal: the first stops the run, the next cancel what is in flight."""
        if self.reason is None:
            self(StopReason.INTERRUPTED, f"{signal.Signals(signum).name}: no call starts any "
                 "more; finishing the calls in flight, then writing")
        else:
            self.force()


class Engine:
    def __init__(
        self,
        *,
        job: Job,
        context: Context,
        journal: Journal,
        events: EventLog,
        limits: Limits,
        concurrency: int,
        on_progress: Callable[[int], None] | None = None,
        stop: Stop | None = None,
        calls_made: Callable[[], dict[str, dict[str, int]]] = dict,
    ) -> None:
        self.job = job
        self.context = context
        self.journal = journal
        self.events = events
        self.limits = limits
        self.stop = stop or Stop()
        self.stop.on_stop(context.stopping.set)
        #: the calls counters, as the checkpoint keeps them
        self.calls_made = calls_made
        self.finished = 0  # items finished by this execution, for --max-failure-rate
        self.failed = 0
        # Batches refused with AccessDenied while nothing has succeeded yet: held back, so that
        # a storm stops the run with one message and leaves its items pending for resume.
        self._succeeded_once = False
        self._denied: list[tuple[Batch, CallError]] = []
        # A batch that only waits (polls a status) holds no call slot, so a job may take more
        # batches than calls in flight; a mutating job never does: every batch it holds may
        # change something. A job whose batches wait for look-ups before their call takes
        # several a slot, and each batch holds one of --concurrency answer slots from its first
        # call until its answers are durable (``job.AnswerSlot``): a crash makes again no more
        # calls than --concurrency. The batches beyond the call slots are a few dozen at most
        # (``MAX_WAITING_BATCHES``).
        self._answer_places: anyio.Semaphore | None = None
        if job.changes_state:
            in_flight = concurrency
        elif job.batches_per_slot > 1:
            in_flight = concurrency + min((job.batches_per_slot - 1) * concurrency,
                                          MAX_WAITING_BATCHES)
            self._answer_places = anyio.Semaphore(concurrency, fast_acquire=True)
        else:
            in_flight = job.max_in_flight or concurrency
        self._batch_slots = anyio.Semaphore(in_flight, fast_acquire=True)
        self._on_progress = on_progress or (lambda _n: None)
        self._answered = False  # a batch of this execution has come back
        self._armed = False

    async def run(self, batches: Iterable[Batch]) -> Stop:
        send, receive = anyio.create_memory_object_stream[Entry](
            max_buffer_size=64
        )
        async with anyio.create_task_group() as outer:
            outer.start_soon(self.journal.run, receive, self.calls_made)
            async with send, anyio.create_task_group() as timers:
                async with anyio.create_task_group() as work:
                    self._arm(timers, work.cancel_scope)
                    instance: tuple[str, str, str] | None = None
                    for batch in batches:
                        if self._should_stop():
                            break
                        if (batch.account_id, batch.region, batch.instance_id) != instance:
                            instance = (batch.account_id, batch.region, batch.instance_id)
                            if not self._batch_slots.value and self._answered:
                                # The instance's first batch waits for a slot: its look-ups
                                # need not. Only once a batch has come back (the first
                                # batches' own look-ups are done), behind those of the batches
                                # in flight (a checkpoint lets those ask first), and one
                                # instance ahead at most: they never delay a batch that could
                                # call.
                                await checkpoint()
                                if self._should_stop():
                                    break
                                work.start_soon(self.job.look_ahead, batch, self.context)
                        await self._batch_slots.acquire()
                        if self._should_stop():
                            self._batch_slots.release()
                            break
                        work.start_soon(self._run_batch, batch, send)
                if self._denied and self.stop.reason is None:
                    # No storm after all (too few to tell): they are failures like any other.
                    await self._release_denied(send)
                self._armed = False
                timers.cancel_scope.cancel()
            # The work is done and `send` is closed: the journal drains and flushes by itself.
        return self.stop

    def _arm(self, timers: anyio.abc.TaskGroup, work: anyio.CancelScope) -> None:
        """The deadline, and the grace the calls in flight get once stopped (``grace_s``); a
        second signal (force) cancels them at once."""

        async def cancel_after_grace() -> None:
            await anyio.sleep(self.limits.grace_s)
            work.cancel()

        async def deadline(at: datetime) -> None:
            await anyio.sleep(max(0.0, (at - utc_now()).total_seconds()))
            self._should_stop()

        def stopping() -> None:
            # A signal is said at once; a deadline or an abort is said by the closing report.
            level = "warning" if self.stop.reason == StopReason.INTERRUPTED else "debug"
            self.events.emit("stopping", level=level, message=self.stop.message,
                             reason=str(self.stop.reason))
            if self._armed:
                timers.start_soon(cancel_after_grace)

        def force() -> None:
            if self._armed:
                work.cancel()

        self._armed = True
        if self.limits.deadline is not None:
            timers.start_soon(deadline, self.limits.deadline)
        self.stop.on_stop(stopping)
        self.stop.on_force(force)

    def _should_stop(self) -> bool:
        if self.stop.reason is None and self.limits.deadline and utc_now() >= self.limits.deadline:
            self.stop(StopReason.DEADLINE, "deadline reached; pending items stay for resume")
        return self.stop.reason is not None

    async def _run_batch(self, batch: Batch, send: anyio.abc.ObjectSendStream[
            Entry]) -> None:
        answer = None
        if self._answer_places is not None:
            answer = AnswerSlot(self._answer_places)
            ANSWER_SLOT.set(answer)  # this batch's task only: it runs in a context of its own
        try:
            await self._process(batch, send)
        finally:
            if answer is not None and answer.held:
                answer.places.release()
            self._batch_slots.release()

    async def _process(self, batch: Batch, send: anyio.abc.ObjectSendStream[
            Entry]) -> None:
        try:
            outcomes = await self.job.process(batch, self.context)
        except Abandoned:
            return  # not retried because the run is stopping: its items stay pending
        except FatalError as error:
            self.stop(StopReason.ABORTED, f"{error.code}: {error.message}")
            return
        except CallError as error:
            if isinstance(error, AccessDenied) and not self._succeeded_once:
                self._denied.append((batch, error))
                if len(self._denied) >= DENIED_BATCHES_FOR_STORM:
                    self.stop(StopReason.ABORTED,
                              f"{len(self._denied)} calls in a row were refused ({error.code}: "
                              f"{error.message}); check the IAM permissions of these "
                              "credentials, then resume")
                return
            if error.code in self.job.split_codes and len(batch.items) > 1:
                # The call was refused because of some of its items: halve until they stand
                # alone; every other item still gets its answer.
                self.events.emit("batch_split", level="debug", batch_id=batch.batch_id,
                                 items=len(batch.items), error_code=error.code)
                for half in batch.halves():
                    await self._process(half, send)
                return
            outcomes = [Failure(item, error) for item in batch.items]
        finished, failed = items_in(outcomes)
        self._answered = True
        if not self._succeeded_once and finished > failed:
            self._succeeded_once = True
            await self._release_denied(send)
        await self._send(batch.batch_id, outcomes, send)
        self.finished += finished
        self.failed += failed
        self._on_progress(finished)
        self._check_failure_rate()

    async def _send(self, batch_id: str, outcomes: list[Outcome],
                    send: anyio.abc.ObjectSendStream[Entry]) -> None:
        entry = Entry(batch_id, outcomes)
        await send.send(entry)
        await entry.durable.wait()

    async def _release_denied(self, send: anyio.abc.ObjectSendStream[Entry]) -> None:
        held, self._denied = self._denied, []
        for batch, error in held:
            await self._send(batch.batch_id, [Failure(i, error) for i in batch.items], send)
            self.finished += len(batch.items)
            self.failed += len(batch.items)

    def _check_failure_rate(self) -> None:
        limit = self.limits.max_failure_rate
        if limit is None or self.finished < MIN_ITEMS_FOR_FAILURE_RATE:
            return
        if self.failed / self.finished > limit:
            self.stop(StopReason.ABORTED, f"failure rate {self.failed / self.finished:.1%} of "
                      f"{self.finished} finished items is over --max-failure-rate {limit:.1%}")
