"""Bulk seeding: 100,000 numbers, read back through the AWS API."""

from __future__ import annotations

import urllib.error
from typing import Any

import pytest

from tests.conftest import Sandbox


def _all_pages(call: Any, key: str, **kwargs: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        page = call(**kwargs)
        items += page[key]
        if not page.get("NextToken"):
            return items
        kwargs["NextToken"] = page["NextToken"]


def test_seed_100000_numbers_and_list_them_back(sandbox: Sandbox) -> None:
    made = sandbox.seed(region="us-east-1", instances=10, numbers_per_instance=10_000,
                        flows_per_instance=4, associated_fraction=0.75, seed=42)
    assert made["numbers"] == 100_000
    assert made["seconds"] < 30  # "in seconds": generous on a shared two-core machine
    assert 0.70 * 100_000 < made["associated"] < 0.80 * 100_000

    connect = sandbox.client("connect")
    instances = _all_pages(connect.list_instances, "InstanceSummaryList", MaxResults=10)
    assert sorted(i["Id"] for i in instances) == sorted(i["id"] for i in made["instances"])

    first = made["instances"][0]
    numbers = _all_pages(connect.list_phone_numbers_v2, "ListPhoneNumbersSummaryList",
                         InstanceId=first["id"], MaxResults=1000)
    assert len(numbers) == 10_000
    assert len({n["PhoneNumberId"] for n in numbers}) == 10_000
    assert all(n["TargetArn"] == first["arn"] for n in numbers)

    associations = _all_pages(connect.list_flow_associations, "FlowAssociationSummaryList",
                              InstanceId=first["id"], MaxResults=1000)
    assert len(associations) == first["associated"]
    arns = {n["PhoneNumberArn"] for n in numbers}
    assert {a["ResourceId"] for a in associations} <= arns

    everything = numbers + [
        number
        for instance in made["instances"][1:]
        for number in _all_pages(connect.list_phone_numbers_v2, "ListPhoneNumbersSummaryList",
                                 TargetArn=instance["arn"], MaxResults=1000)
    ]
    assert len(everything) == 100_000
    assert len({n["PhoneNumber"] for n in everything}) == 100_000


def test_the_same_seed_gives_the_same_world(sandbox: Sandbox) -> None:
    first = sandbox.seed(instances=2, numbers_per_instance=50, seed=3)
    sandbox.reset()
    second = sandbox.seed(instances=2, numbers_per_instance=50, seed=3)
    assert first["instances"] == second["instances"]


def test_seeded_numbers_answer_batch_get(sandbox: Sandbox) -> None:
    made = sandbox.seed(instances=1, numbers_per_instance=100, flows_per_instance=2,
                        associated_fraction=0.5, seed=1)
    instance = made["instances"][0]
    connect = sandbox.client("connect")
    numbers = connect.list_phone_numbers_v2(InstanceId=instance["id"], MaxResults=100)
    ids = [n["PhoneNumberArn"] for n in numbers["ListPhoneNumbersSummaryList"]]
    answer = connect.batch_get_flow_association(InstanceId=instance["id"], ResourceIds=ids)
    assert len(answer["FlowAssociationSummaryList"]) == instance["associated"]


@pytest.mark.parametrize("bad", [{"instances": -1}, {"associated_fraction": 1.5},
                                 {"numbers": 5}, {"flows_per_instance": 0}])
def test_bad_seed_requests_are_refused_with_400(sandbox: Sandbox, bad: dict[str, Any]) -> None:
    with pytest.raises(urllib.error.HTTPError) as exc:
        sandbox.seed(**bad)
    assert exc.value.code == 400
    exc.value.close()
