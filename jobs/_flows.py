"""An instance's contact flows, listed once per instance and run with ``ListContactFlows``
(paginated, rate-limited like any call), each page noted in the run directory as it comes so
that a resumed run does not list again; shared by the jobs that name flows.
https://docs.aws.amazon.com/connect/latest/APIReference/API_ListContactFlows.html
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio
from connect_bulk.pipeline.job import Batch, Context


@dataclass(frozen=True, slots=True)
class Flow:
    id: str
    arn: str
    name: str


@dataclass(frozen=True, slots=True)
class Flows:
    """One instance's flows, by ID and by name (a name two flows share maps to both)."""

    by_id: dict[str, Flow]
    by_name: dict[str, list[Flow]]

    @classmethod
    def of(cls, flows: list[Flow]) -> Flows:
        by_name: dict[str, list[Flow]] = {}
        for flow in flows:
            by_name.setdefault(flow.name, []).append(flow)
        return cls({flow.id: flow for flow in flows}, by_name)

    def name_of(self, arn_or_id: str | None) -> str | None:
        if not arn_or_id:
            return None
        flow = self.by_id.get(arn_or_id.rsplit("/", 1)[-1].lower())
        return flow.name if flow else None


class FlowDirectory:
    """``ListContactFlows`` once per instance and run; concurrent batches of one instance wait
    for one listing."""

    KIND = "flows-page"

    def __init__(self) -> None:
        self._locks: dict[str, anyio.Lock] = {}
        self._flows: dict[str, Flows] = {}

    async def of(self, ctx: Context, batch: Batch) -> Flows:
        key = f"{batch.account_id}/{batch.region}/{batch.instance_id}"
        if key in self._flows:
            return self._flows[key]
        async with self._locks.setdefault(key, anyio.Lock()):
            if key not in self._flows:
                self._flows[key] = Flows.of(await self._list(ctx, batch, key))
        return self._flows[key]

    async def _list(self, ctx: Context, batch: Batch, key: str) -> list[Flow]:
        flows: list[Flow] = []
        token = None
        page_number = 0
        while True:
            page_number += 1
            noted = ctx.notes.get(self.KIND, f"{key}#{page_number}")
            if noted is None:
                params: dict[str, Any] = {"InstanceId": batch.instance_id, "MaxResults": 1000}
                if token:
                    params["NextToken"] = token
                page = await ctx.aws.call("connect", "ListContactFlows", region=batch.region,
                                          account=batch.account_id, **params)
                noted = {
                    "flows": [[f["Id"].lower(), f["Arn"], f["Name"]]
                              for f in page.data.get("ContactFlowSummaryList", [])],
                    "next": page.data.get("NextToken"),
                }
                ctx.notes.put(self.KIND, f"{key}#{page_number}", noted)
            flows += [Flow(*entry) for entry in noted["flows"]]
            token = noted["next"]
            if not token:
                return flows
