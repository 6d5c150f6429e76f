"""Planning: de-duplication, the fewest calls, stable batch ids."""

from __future__ import annotations

import math

import polars as pl
from connect_bulk.jobs.flow_associations import FlowAssociations
from connect_bulk.pipeline.plan import estimate, iter_batches, plan


def _items(counts: dict[str, int], *, duplicates: int = 0) -> pl.DataFrame:
    rows = [
        {"item_key": f"{instance}-n{i}", "instance_id": instance, "region": "us-east-1",
         "account_id": "1", "phone_number_id": f"{instance}-n{i}"}
        for instance, n in counts.items() for i in range(n)
    ]
    rows += rows[:duplicates]
    return pl.DataFrame(rows).with_row_index("input_row", offset=1).with_columns(
        pl.col("input_row").cast(pl.Int64))


def test_the_fewest_calls_and_no_batch_over_100() -> None:
    counts = {"a": 250, "b": 100, "c": 1, "d": 101}
    planned = plan(FlowAssociations(), _items(counts, duplicates=7), rows_total=459,
                   rows_rejected=0)
    assert planned.rows_duplicate == 7
    assert planned.items_total == 452
    batches = list(iter_batches(planned.items))
    assert len(batches) == sum(math.ceil(n / 100) for n in counts.values()) == 7
    assert max(len(b.items) for b in batches) == 100
    assert all(len({i.instance_id for i in b.items}) == 1 for b in batches)
    assert sorted(i.item_key for b in batches for i in b.items) == sorted(
        planned.items["item_key"])


def test_duplicates_keep_their_first_row_and_batch_ids_are_stable() -> None:
    items = _items({"a": 150}, duplicates=3)
    first = plan(FlowAssociations(), items, rows_total=153, rows_rejected=0)
    again = plan(FlowAssociations(), items.sample(fraction=1.0, shuffle=True, seed=1),
                 rows_total=153, rows_rejected=0)
    assert first.items.equals(again.items)
    assert first.items["batch_id"].unique().sort().to_list() == ["a#00000", "a#00001"]
    assert first.items.filter(pl.col("item_key") == "a-n0")["input_row"].item() == 1


def test_estimate_is_the_slowest_limiter() -> None:
    items = _items({"a": 1000, "b": 100})
    planned = plan(FlowAssociations(), items, rows_total=1100, rows_rejected=0)
    figures = estimate(FlowAssociations(), planned.items, rate=2.0, burst=5.0)
    # 11 batches; one flow listing per instance (2), on its own limiter
    assert figures["calls"] == {"BatchGetFlowAssociation": 11, "ListContactFlows": 2,
                                "DescribeInstance": 2}
    assert figures["estimated_s"] == (11 - 5) / 2  # one account and region: the slowest
    no_names = estimate(FlowAssociations(flow_names=False), planned.items, rate=2.0, burst=5.0)
    assert no_names["calls"] == {"BatchGetFlowAssociation": 11, "DescribeInstance": 2}


def test_batches_give_every_planned_row_as_it_is_across_chunks() -> None:
    items = _items({"a": 230, "b": 5, "c": 120}).with_columns(
        # a job's column, given for one instance's numbers only
        pl.when(pl.col("instance_id") == "c").then(pl.lit("+1555")).otherwise(None)
        .alias("phone_number"))
    planned = plan(FlowAssociations(), items, rows_total=355, rows_rejected=0).items
    batches = list(iter_batches(planned, chunk_rows=150))
    got = pl.DataFrame(
        [{"batch_id": b.batch_id, **i._asdict()} | {"phone_number": i.data.get("phone_number")}
         for b in batches for i in b.items], infer_schema_length=None).drop("data")
    want = planned.select(got.columns).with_columns(
        pl.col("batch_id", "instance_id", "region", "account_id").cast(pl.String))
    assert got.equals(want)
    assert all(b.instance_id == i.instance_id and b.region == i.region
               for b in batches for i in b.items)
    assert [len(b.items) for b in batches] == [100, 100, 30, 5, 100, 20]
