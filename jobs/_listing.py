"""A per-instance Connect listing, every page, each noted in the run directory as it comes (with
the token of the next), so that a killed listing goes on where it was and a resumed run does not
list again. Shared by the phone number and the contact flow directories."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from connect_bulk.pipeline.job import Batch, Context


async def noted_listing(ctx: Context, batch: Batch, operation: str,
                        entries: Callable[[dict[str, Any]], Any]) -> list[Any]:
    """The ``entries`` of every page of ``operation`` for the batch's instance, in order."""
    key = f"{operation}/{batch.account_id}/{batch.region}/{batch.instance_id}"
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
            ctx.notes.put("listing-page", f"{key}#{len(pages) + 1}", noted)
        pages.append(noted["entries"])
        token = noted["next"]
        if not token:
            return pages
