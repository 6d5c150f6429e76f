"""An instance's contact flows, listed once per instance and run with ``ListContactFlows``
(paginated, rate-limited like any call, noted page by page: ``noted_listing``); shared by the
jobs that name flows.
https://docs.aws.amazon.com/connect/latest/APIReference/API_ListContactFlows.html
"""

from __future__ import annotations

from dataclasses import dataclass

from connect_bulk.pipeline.job import Batch, Context

from ._listing import noted_listing


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


async def list_flows(ctx: Context, batch: Batch) -> Flows:
    """The batch's instance's flows: ``ListContactFlows``, every page (use through
    ``PerInstance``: once per instance and run)."""
    pages = await noted_listing(ctx, batch, "ListContactFlows", lambda data: [
        [f["Id"].lower(), f["Arn"], f["Name"]] for f in data.get("ContactFlowSummaryList", [])])
    return Flows.of([Flow(*entry) for page in pages for entry in page])
