"""What a job is, to the engine.

A job is one module in ``jobs/`` that defines ``JOB``, an instance of a ``Job`` subclass: its
input columns, how rows become items, how a batch of items becomes AWS calls, and how answers
become result rows. The engine (everything else in ``pipeline/``) does the rest: reading,
de-duplicating, batching, rate limits, retries, splitting, checkpoints and outputs.
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol

import anyio

if TYPE_CHECKING:
    from pathlib import Path

    import click
    import polars as pl

    from .aws import Answer
    from .errors import CallError
    from .notes import Notes


@dataclass(frozen=True, slots=True)
class Column:
    """An input column: its name, the other names it goes by, and whether it must be there."""

    name: str
    aliases: tuple[str, ...] = ()
    required: bool = True
    help: str = ""


NO_DATA: Mapping[str, Any] = MappingProxyType({})


class Item(NamedTuple):
    """One unit of work: ``(instance_id, item_key)`` is its identity within a run.

    Items, and the outcomes below, are made once per number on the hot path: named tuples,
    immutable and about four times cheaper to make than frozen dataclasses. ``data`` holds the
    job's own item columns; a null one may be left out, so a job reads it with ``get``."""

    item_key: str
    instance_id: str
    region: str
    account_id: str
    input_row: int
    data: Mapping[str, Any] = NO_DATA


@dataclass(frozen=True, slots=True)
class Batch:
    """Items that go into one call: same instance (so same account and region)."""

    batch_id: str
    instance_id: str
    region: str
    account_id: str
    items: tuple[Item, ...]

    def halves(self) -> tuple[Batch, Batch]:
        middle = len(self.items) // 2
        return (
            Batch(f"{self.batch_id}.1", self.instance_id, self.region, self.account_id,
                  self.items[:middle]),
            Batch(f"{self.batch_id}.2", self.instance_id, self.region, self.account_id,
                  self.items[middle:]),
        )


@dataclass(slots=True)
class AnswerSlot:
    """A batch's place among the answers not yet durable, of which there are ``--concurrency``:
    taken by the batch's first call (before its token and its call slot), given back by the
    engine once the batch's answers are durable. A job may then hold more batches than call
    slots, its batches waiting for their instance's look-ups without one, and a crash still
    makes again at most ``--concurrency`` calls: those in flight and those answered but not yet
    durable."""

    places: anyio.Semaphore
    held: bool = False

    async def take(self) -> None:
        await self.places.acquire()
        self.held = True  # the engine gives it back, once the batch's answers are durable


#: the answer slot of the batch whose task makes the call; the engine sets it in each batch's
#: task for a job that holds more batches than call slots (``Job.batches_per_slot``)
ANSWER_SLOT: ContextVar[AnswerSlot | None] = ContextVar("connect_bulk_answer_slot",
                                                         default=None)


def answer_slot_to_take() -> AnswerSlot | None:
    """The answer slot the calling batch's call must take first: none when its job has none,
    or when an earlier call of the batch took it."""
    slot = ANSWER_SLOT.get()
    return slot if slot is not None and not slot.held else None


class Success(NamedTuple):
    item: Item
    row: Mapping[str, Any]
    attempts: int


class Failure(NamedTuple):
    item: Item
    error: CallError


class Answered(NamedTuple):
    """Items that one call answered, their result rows as columns: ``columns`` maps a result
    column to one value per item, in the order of ``items`` (a column not given is null). A job
    whose call answers a hundred items returns one of these rather than a ``Success`` each: a
    dict per item is most of what such a job would cost the run."""

    items: Sequence[Item]
    columns: Mapping[str, Sequence[Any]]
    attempts: int


Outcome = Success | Failure | Answered


def one_by_one(outcomes: Sequence[Outcome]) -> list[Success | Failure]:
    """Each item's outcome on its own, an ``Answered`` as a ``Success`` an item (to read
    outcomes; the hot path keeps their columns)."""
    each: list[Success | Failure] = []
    for outcome in outcomes:
        if isinstance(outcome, Answered):
            names = list(outcome.columns)
            each += [Success(item, dict(zip(names, values, strict=True)), outcome.attempts)
                     for item, *values in zip(outcome.items, *outcome.columns.values(),
                                              strict=True)]
        else:
            each.append(outcome)
    return each


def items_in(outcomes: Sequence[Outcome]) -> tuple[int, int]:
    """How many items ``outcomes`` finish, and how many of them failed."""
    finished = failed = 0
    for outcome in outcomes:
        if isinstance(outcome, Answered):
            finished += len(outcome.items)
        else:
            finished += 1
            failed += isinstance(outcome, Failure)
    return finished, failed


class Calls(Protocol):
    """How a job calls AWS: rate-limited per (operation, account, region), retried, counted,
    and refused once the run stops (``aws.Caller``; a test may give a fake)."""

    async def call(self, service: str, operation: str, *, region: str, account: str,
                   **params: Any) -> Answer: ...


class Phases:
    """What the work in flight is doing, for the progress bar and the log: ``set(key, state)``
    as a batch (or an onboarding job it waits on) moves, ``clear(key)`` when it is done; read as
    ``waiting on 4 jobs: 3 IN_PROGRESS, 1 SUCCEEDED``."""

    def __init__(self) -> None:
        self._states: dict[str, tuple[str, str]] = {}  # key -> (what, state)

    def set(self, key: str, state: str, *, what: str = "{n} batches") -> None:
        self._states[key] = (what, state)

    def clear(self, key: str) -> None:
        self._states.pop(key, None)

    def describe(self) -> str:
        by_what: dict[str, dict[str, int]] = {}
        for what, state in self._states.values():
            counts = by_what.setdefault(what, {})
            counts[state] = counts.get(state, 0) + 1
        return "; ".join(
            what.format(n=sum(counts.values())) + ": "
            + ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
            for what, counts in sorted(by_what.items()))


@dataclass(frozen=True, slots=True)
class Context:
    """What a job's ``process`` works with: its calls, the run's notes, and the run's stop (a
    job that waits, polling a status, ends its wait when it is set)."""

    aws: Calls
    notes: Notes
    stopping: anyio.Event = field(default_factory=anyio.Event)
    phases: Phases = field(default_factory=Phases)


@dataclass(frozen=True, slots=True)
class Normalized:
    """The job's reading of the input: valid rows as items, and the rows it refused; queries
    over the input, run a chunk at a time (the input is never held whole).

    ``items`` has at least ``item_key``, ``instance_id``, ``region`` (null: the run's region),
    ``account_id`` (null: the caller's account) and ``input_row``; ``rejects`` has
    ``input_row`` and ``reason``.
    """

    items: pl.LazyFrame
    rejects: pl.LazyFrame


class Job(ABC):
    name: ClassVar[str]
    summary: ClassVar[str]
    columns: ClassVar[tuple[Column, ...]]
    #: the operation that each batch calls first, and how many items one call takes
    operation: ClassVar[str]
    batch_size: ClassVar[int]
    #: a job that changes AWS state asks before it starts on a TTY
    mutating: ClassVar[bool] = False
    #: result columns and their Polars types, besides the engine's own
    result_schema: ClassVar[Mapping[str, Any]]
    #: error codes that reject a whole batch because of some of its items: split and retry
    split_codes: ClassVar[frozenset[str]] = frozenset()
    #: batches in flight at once; None: --concurrency. A job whose batches mostly wait (poll a
    #: status) takes more, since a waiting batch holds no call slot.
    max_in_flight: ClassVar[int | None] = None
    #: batches in flight a call slot, for a job that only reads and whose batches wait for
    #: look-ups before their call (an instance's, made once for all its batches): they wait
    #: holding no call slot, and the answers not yet durable stay bounded by --concurrency
    #: (``AnswerSlot``); at most ``engine.MAX_WAITING_BATCHES`` beyond the call slots
    batches_per_slot: ClassVar[int] = 1
    #: job options that only widen what a redrive may do: ``retry`` accepts them again
    redrive_options: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, **options: Any) -> None:
        """``options`` by their names; one not given has the default its option declares
        (``cli_options``), so that a job never repeats a default."""
        declared = {o.name: o.default for o in type(self).cli_options() if o.name}
        unknown = set(options) - set(declared)
        if unknown:
            raise TypeError(f"{type(self).name} has no option {', '.join(sorted(unknown))}")
        self.options: dict[str, Any] = declared | options

    @classmethod
    def cli_options(cls) -> list[click.Option]:
        return []

    @classmethod
    def commands(cls) -> list[click.Command]:
        """Commands of this job's own (``diff``), beside the shared ones."""
        return []

    @abstractmethod
    def normalize(self, frame: pl.LazyFrame) -> Normalized:
        """Turn the input (every column a string, plus ``input_row``) into items and rejects:
        expressions over ``frame`` (``with_columns``, ``filter``, ``select``)."""

    def across_rows(self, items: pl.DataFrame) -> pl.DataFrame:
        """Rules across rows (the same number given two flows), once every block of the input
        is read: the ``input_row`` and ``reason`` of the items they refuse. ``normalize`` sees a
        block at a time, so a rule that compares rows belongs here."""
        import polars as pl

        return pl.DataFrame(schema={"input_row": pl.Int64, "reason": pl.String})

    def describe(self, items: pl.DataFrame) -> list[str]:
        """Lines that tell an operator what a mutating run will do, before it asks."""
        return []

    def also_redrive(self) -> pl.Expr | None:
        """Failures (``error_code``, ``retryable``) that ``retry`` takes besides the retryable
        ones, given this job's options; None: no others."""
        return None

    def warnings(self, results: pl.DataFrame) -> int:
        """Items that succeeded, but not quite as asked (a ``warning`` column says why): the
        run ends with exit 1 so that cron notices."""
        if "warning" not in results.columns:
            return 0
        return int(results["warning"].is_not_null().sum())

    @property
    def changes_state(self) -> bool:
        """Whether this run changes AWS state (asks first on a TTY, holds no more batches than
        calls in flight); a job's dry run does not."""
        return type(self).mutating

    def calls_per_batch(self) -> Mapping[str, float]:
        """Expected calls of each operation per batch, for ``plan``."""
        return {self.operation: 1.0}

    def calls_per_item(self) -> Mapping[str, float]:
        """Calls of each operation per item (at most), for ``plan``."""
        return {}

    def calls_per_instance(self) -> Mapping[str, float]:
        """Calls of each operation per instance (a listing), for ``plan``."""
        return {}

    async def look_ahead(self, batch: Batch, ctx: Context) -> None:
        """The per-instance look-ups ``process`` will need for ``batch``, made while the batches
        before it are in flight: once a batch has come back, the engine calls it for the first
        batch of an instance when that batch must wait for a slot, so that the instance's
        batches do not then all wait for them. What goes wrong here is met again, and dealt
        with, in ``process``."""
        return  # most jobs have none

    def finish(self, run_dir: Path, results: pl.DataFrame) -> None:
        """At the end of every execution, after the final files: a job's own files."""
        return  # most jobs have none

    @abstractmethod
    async def process(self, batch: Batch, ctx: Context) -> list[Outcome]:
        """Make the calls for one batch and return one outcome per item (an ``Answered``
        stands for each of its items).

        A ``CallError`` raised here fails the whole batch: the engine splits it when its code is
        in ``split_codes``, else records every item as failed with it.
        """


def job_names() -> list[str]:
    from connect_bulk import jobs

    return sorted(
        module.name.replace("_", "-")
        for module in pkgutil.iter_modules(jobs.__path__)
        if not module.name.startswith("_")
    )


def load_job_class(name: str) -> type[Job]:
    from .errors import UsageError

    if name not in job_names():
        raise UsageError(f"unknown job {name!r}; jobs: {', '.join(job_names())}")
    module = importlib.import_module(f"connect_bulk.jobs.{name.replace('-', '_')}")
    job: type[Job] = module.JOB
    return job
