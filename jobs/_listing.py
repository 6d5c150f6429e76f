"""Per-instance look-ups, shared by the jobs: made once per instance and run (``PerInstance``),
and listings read page by page, each page noted in the run directory as it comes (with the token
of the next), so that a killed listing goes on where it was and a resumed run does not list
again (``noted_listing``)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar

import anyio
from connect_bulk.pipeline.errors import Abandoned, CallError, ClientFault
from connect_bulk.pipeline.job import ANSWER_SLOT, Batch, Context

T = TypeVar("T")


def instance_key(batch: Batch) -> str:
    return f"{batch.account_id}/{batch.region}/{batch.instance_id}"


class PerInstance(Generic[T]):
    """``look_up`` made once per instance and run: concurrent batches of one instance wait for
    one; a refusal (an instance that is not there) is kept too, so that a batch split in halves
    does not ask again for every half."""

    def __init__(self, look_up: Callable[[Context, Batch], Awaitable[T]]) -> None:
        self._look_up = look_up
        self._done: dict[str, tuple[T | None, ClientFault | None]] = {}
        self._locks: dict[str, anyio.Lock] = {}

    async def of(self, ctx: Context, batch: Batch) -> T:
        key = instance_key(batch)
        if key not in self._done:
            async with self._locks.setdefault(key, anyio.Lock()):
                if key not in self._done:
                    # The instance's look-up, not the batch's answer: its calls take no answer
                    # slot (``job.AnswerSlot``), so no batch holds one while it waits for this
                    # lock (one that listed the numbers first would, and its holder would wait
                    # for that slot).
                    outside = ANSWER_SLOT.set(None)
                    try:
                        self._done[key] = (await self._look_up(ctx, batch), None)
                    except ClientFault as error:
                        self._done[key] = (None, error)
                    finally:
                        ANSWER_SLOT.reset(outside)
        value, refused = self._done[key]
        if refused is not None:
            raise refused
        return value  # type: ignore[return-value]

    async def ahead(self, ctx: Context, batch: Batch) -> None:
        """``of``, made ahead of the batches that need it (``Job.look_ahead``): an error is not
        raised here but met again by the batch that asks."""
        with contextlib.suppress(CallError, Abandoned):
            await self.of(ctx, batch)

    def known(self, batch: Batch) -> T | None:
        """What ``of`` found for the batch's instance, if it has looked."""
        return self._done.get(instance_key(batch), (None, None))[0]


class LookUp(Protocol):
    async def ahead(self, ctx: Context, batch: Batch) -> None: ...


async def ahead(ctx: Context, batch: Batch, *look_ups: LookUp) -> None:
    """The batch's instance's ``look_ups``, made at once and together, ahead of the batches
    that need them (``Job.look_ahead``)."""
    async with anyio.create_task_group() as group:
        for look_up in look_ups:
            group.start_soon(look_up.ahead, ctx, batch)


async def noted_listing(ctx: Context, batch: Batch, operation: str,
                        entries: Callable[[dict[str, Any]], Any]) -> list[Any]:
    """The ``entries`` of every page of ``operation`` for the batch's instance, in order."""
    key = f"{operation}/{instance_key(batch)}"
    pages: list[Any] = []
    token = None
    while True:
        noted = ctx.notes.get("listing-page", f"{key}#{len(pages) + 1}")
        if noted is None:
            params: dict[str, Any] = {"InstanceId": batch.instance_id, "MaxResults": 1000}
            if token:
                params["NextToken"] = token
            page = await ctx.aws.call("connect", operation, region=batch.region,
                                      account=batch.account_id, **params)
            noted = {"entries": entries(page.data), "next": page.data.get("NextToken")}
            await ctx.notes.put("listing-page", f"{key}#{len(pages) + 1}", noted)
        pages.append(noted["entries"])
        token = noted["next"]
        if not token:
            return pages
