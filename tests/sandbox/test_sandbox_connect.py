"""Amazon Connect operations of the sandbox, driven only through real boto3 clients."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from botocore.exceptions import ClientError, ParamValidationError

from tests.conftest import Sandbox

FLOW = '{"Version": "2019-10-30", "StartAction": "end", "Actions": []}'


@dataclass
class World:
    connect: Any
    instance: dict[str, str]
    other: dict[str, str]
    flow: dict[str, str]
    numbers: list[dict[str, str]]  # the first two associated with flow, the third not
    foreign: dict[str, str]  # claimed in the other instance


def _instance(connect: Any, alias: str) -> dict[str, str]:
    made = connect.create_instance(
        IdentityManagementType="CONNECT_MANAGED", InstanceAlias=alias,
        InboundCallsEnabled=True, OutboundCallsEnabled=True,
    )
    return {"Id": made["Id"], "Arn": made["Arn"]}


@pytest.fixture
def world(sandbox: Sandbox) -> World:
    connect = sandbox.client("connect")
    instance, other = _instance(connect, "main"), _instance(connect, "other")
    numbers = [
        connect.claim_phone_number(TargetArn=instance["Arn"], PhoneNumber=f"+1555010000{i}")
        for i in range(3)
    ]
    foreign = connect.claim_phone_number(TargetArn=other["Arn"], PhoneNumber="+442071234567")
    flow = connect.create_contact_flow(
        InstanceId=instance["Id"], Name="Main IVR", Type="CONTACT_FLOW", Content=FLOW
    )
    for number in numbers[:2]:
        connect.associate_phone_number_contact_flow(
            PhoneNumberId=number["PhoneNumberId"], InstanceId=instance["Id"],
            ContactFlowId=flow["ContactFlowId"],
        )
    return World(connect, instance, other, flow, numbers, foreign)


def _error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int, str]:
    response = exc.value.response
    return (response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"],
            response["Error"]["Message"])


def test_batch_get_by_arn_answers_only_associated_numbers(world: World) -> None:
    first, second, unassociated = world.numbers
    answer = world.connect.batch_get_flow_association(
        InstanceId=world.instance["Id"],
        ResourceIds=[first["PhoneNumberArn"], second["PhoneNumberArn"],
                     unassociated["PhoneNumberArn"]],
        ResourceType="VOICE_PHONE_NUMBER",
    )["FlowAssociationSummaryList"]
    assert sorted(answer, key=lambda a: a["ResourceId"]) == sorted(
        [
            {"ResourceId": n["PhoneNumberArn"], "FlowId": world.flow["ContactFlowArn"],
             "ResourceType": "VOICE_PHONE_NUMBER"}
            for n in (first, second)
        ],
        key=lambda a: a["ResourceId"],
    )
    assert world.flow["ContactFlowArn"].startswith(world.instance["Arn"] + "/contact-flow/")


def test_batch_get_refuses_bare_ids_as_the_model_wants_arns(world: World) -> None:
    with pytest.raises(ClientError) as exc:
        world.connect.batch_get_flow_association(
            InstanceId=world.instance["Id"],
            ResourceIds=[world.numbers[0]["PhoneNumberArn"], world.numbers[1]["PhoneNumberId"]],
        )
    code, status, message = _error(exc)
    assert (code, status) == ("InvalidParameterException", 400)
    assert world.numbers[1]["PhoneNumberId"] in message


def test_batch_get_accepts_the_instance_arn_and_legacy_number_arns(world: World) -> None:
    number = world.numbers[0]
    legacy = f"{world.instance['Arn']}/phone-number/{number['PhoneNumberId']}"
    answer = world.connect.batch_get_flow_association(
        InstanceId=world.instance["Arn"], ResourceIds=[legacy]
    )["FlowAssociationSummaryList"]
    assert [a["ResourceId"] for a in answer] == [number["PhoneNumberArn"]]


@pytest.mark.parametrize("bad", ["foreign", "unknown", "released", "other-region-arn"])
def test_a_number_not_claimed_in_the_instance_fails_the_whole_call(
    world: World, bad: str
) -> None:
    if bad == "foreign":
        resource = world.foreign["PhoneNumberArn"]
    elif bad == "unknown":
        resource = world.numbers[0]["PhoneNumberArn"].rsplit("/", 1)[0] + \
            "/4f6f8a55-0000-4000-8000-000000000000"
    elif bad == "released":
        resource = world.numbers[2]["PhoneNumberArn"]
        world.connect.release_phone_number(PhoneNumberId=world.numbers[2]["PhoneNumberId"])
    else:
        resource = world.numbers[0]["PhoneNumberArn"].replace("us-east-1", "eu-west-2")
    with pytest.raises(ClientError) as exc:
        world.connect.batch_get_flow_association(
            InstanceId=world.instance["Id"],
            ResourceIds=[world.numbers[0]["PhoneNumberArn"], resource],
        )
    code, status, message = _error(exc)
    assert (code, status) == ("ResourceNotFoundException", 404)
    assert resource in message


def test_unknown_instance_is_resource_not_found(world: World) -> None:
    with pytest.raises(ClientError) as exc:
        world.connect.batch_get_flow_association(
            InstanceId="00000000-0000-4000-8000-00000000dead",
            ResourceIds=[world.numbers[0]["PhoneNumberArn"]],
        )
    assert _error(exc)[:2] == ("ResourceNotFoundException", 404)


def test_more_than_100_ids_is_a_validation_error(world: World) -> None:
    with pytest.raises(ClientError) as exc:
        world.connect.batch_get_flow_association(
            InstanceId=world.instance["Id"], ResourceIds=[world.numbers[0]["PhoneNumberArn"]] * 101
        )
    code, status, message = _error(exc)
    assert (code, status) == ("InvalidParameterException", 400)
    assert message.startswith("1 validation error detected: ")
    assert "at 'resourceIds' failed to satisfy constraint: Member must have length less than " \
           "or equal to 100" in message


def test_exactly_100_ids_is_accepted(world: World) -> None:
    ids = [world.numbers[i % 3]["PhoneNumberArn"] for i in range(100)]
    answer = world.connect.batch_get_flow_association(
        InstanceId=world.instance["Id"], ResourceIds=ids
    )["FlowAssociationSummaryList"]
    assert len(answer) == 2


def test_empty_id_list_is_refused(world: World) -> None:
    # botocore checks the model's minimum before sending; the call never leaves the client.
    with pytest.raises(ParamValidationError):
        world.connect.batch_get_flow_association(InstanceId=world.instance["Id"], ResourceIds=[])


def test_unknown_resource_type_is_a_validation_error(world: World) -> None:
    with pytest.raises(ClientError) as exc:
        world.connect.batch_get_flow_association(
            InstanceId=world.instance["Id"], ResourceIds=[world.numbers[0]["PhoneNumberArn"]],
            ResourceType="FAX_NUMBER",
        )
    code, _, message = _error(exc)
    assert code == "InvalidParameterException"
    assert "Member must satisfy enum value set" in message


@pytest.mark.parametrize("number", ["5550100009", "+0555", "+1 555 010 0009", "+1555010000912345"])
def test_claim_checks_the_e164_pattern(world: World, number: str) -> None:
    with pytest.raises(ClientError) as exc:
        world.connect.claim_phone_number(TargetArn=world.instance["Arn"], PhoneNumber=number)
    code, status, message = _error(exc)
    assert (code, status) == ("InvalidParameterException", 400)
    assert "at 'phoneNumber'" in message


def test_claim_twice_and_claim_into_unknown_instance_fail(world: World) -> None:
    with pytest.raises(ClientError) as exc:
        world.connect.claim_phone_number(
            TargetArn=world.instance["Arn"], PhoneNumber="+15550100000"
        )
    assert _error(exc)[0] == "InvalidParameterException"
    with pytest.raises(ClientError) as exc:
        world.connect.claim_phone_number(
            TargetArn=world.instance["Arn"].replace(world.instance["Id"],
                                                    "00000000-0000-4000-8000-000000000000"),
            PhoneNumber="+15550100099",
        )
    assert _error(exc)[0] == "ResourceNotFoundException"


def test_list_describe_disassociate_and_release(world: World) -> None:
    connect, instance = world.connect, world.instance
    listed = connect.list_phone_numbers_v2(TargetArn=instance["Arn"])["ListPhoneNumbersSummaryList"]
    assert [n["PhoneNumberId"] for n in listed] == [n["PhoneNumberId"] for n in world.numbers]
    assert {n["PhoneNumberCountryCode"] for n in listed} == {"US"}
    assert all(n["InstanceId"] == instance["Id"] for n in listed)

    described = connect.describe_phone_number(PhoneNumberId=world.foreign["PhoneNumberId"])
    summary = described["ClaimedPhoneNumberSummary"]
    assert (summary["PhoneNumber"], summary["PhoneNumberCountryCode"]) == ("+442071234567", "GB")
    assert summary["TargetArn"] == world.other["Arn"]

    associations = connect.list_flow_associations(InstanceId=instance["Id"])
    assert len(associations["FlowAssociationSummaryList"]) == 2

    connect.disassociate_phone_number_contact_flow(
        PhoneNumberId=world.numbers[0]["PhoneNumberId"], InstanceId=instance["Id"]
    )
    answer = connect.batch_get_flow_association(
        InstanceId=instance["Id"], ResourceIds=[n["PhoneNumberArn"] for n in world.numbers]
    )["FlowAssociationSummaryList"]
    assert [a["ResourceId"] for a in answer] == [world.numbers[1]["PhoneNumberArn"]]

    connect.release_phone_number(PhoneNumberId=world.numbers[2]["PhoneNumberId"])
    with pytest.raises(ClientError) as exc:
        connect.describe_phone_number(PhoneNumberId=world.numbers[2]["PhoneNumberId"])
    assert _error(exc)[0] == "ResourceNotFoundException"


def test_associating_a_flow_of_another_instance_fails(world: World) -> None:
    with pytest.raises(ClientError) as exc:
        world.connect.associate_phone_number_contact_flow(
            PhoneNumberId=world.foreign["PhoneNumberId"], InstanceId=world.other["Id"],
            ContactFlowId=world.flow["ContactFlowId"],
        )
    assert _error(exc)[0] == "ResourceNotFoundException"


def test_flow_names_are_unique_and_content_must_be_json(world: World) -> None:
    with pytest.raises(ClientError) as exc:
        world.connect.create_contact_flow(
            InstanceId=world.instance["Id"], Name="Main IVR", Type="CONTACT_FLOW", Content=FLOW
        )
    assert _error(exc)[0] == "DuplicateResourceException"
    with pytest.raises(ClientError) as exc:
        world.connect.create_contact_flow(
            InstanceId=world.instance["Id"], Name="Broken", Type="CONTACT_FLOW", Content="{nope"
        )
    assert _error(exc)[0] == "InvalidContactFlowException"


def test_list_phone_numbers_paginates_and_caps_max_results(sandbox: Sandbox) -> None:
    connect = sandbox.client("connect")
    instance = _instance(connect, "paged")
    for i in range(25):
        connect.claim_phone_number(TargetArn=instance["Arn"], PhoneNumber=f"+1555020{i:04d}")
    seen, token, pages = [], None, 0
    while True:
        kwargs = {"InstanceId": instance["Id"], "MaxResults": 10}
        if token:
            kwargs["NextToken"] = token
        page = connect.list_phone_numbers_v2(**kwargs)
        seen += [n["PhoneNumber"] for n in page["ListPhoneNumbersSummaryList"]]
        pages += 1
        token = page.get("NextToken")
        if not token:
            break
    assert pages == 3
    assert seen == [f"+1555020{i:04d}" for i in range(25)]
    with pytest.raises(ClientError) as exc:
        connect.list_phone_numbers_v2(InstanceId=instance["Id"], MaxResults=1001)
    assert "less than or equal to 1000" in _error(exc)[2]


def test_regions_and_accounts_are_separate_worlds(sandbox: Sandbox) -> None:
    east, west = sandbox.client("connect"), sandbox.client("connect", region="us-west-2")
    instance = _instance(east, "east")
    assert west.list_instances()["InstanceSummaryList"] == []
    number = east.claim_phone_number(TargetArn=instance["Arn"], PhoneNumber="+15550300000")
    assert number["PhoneNumberArn"].startswith("arn:aws:connect:us-east-1:123456789012:")
    with pytest.raises(ClientError) as exc:
        west.batch_get_flow_association(
            InstanceId=instance["Id"], ResourceIds=[number["PhoneNumberArn"]]
        )
    assert _error(exc)[0] == "ResourceNotFoundException"


def test_list_contact_flows_pages_and_filters_by_type(sandbox: Sandbox) -> None:
    connect = sandbox.client("connect")
    instance = _instance(connect, "flows")
    content = '{"Version": "2019-10-30", "StartAction": "end", "Actions": []}'
    made = [connect.create_contact_flow(InstanceId=instance["Id"], Name=f"F{i}",
                                        Type="CONTACT_FLOW", Content=content)
            for i in range(5)]
    connect.create_contact_flow(InstanceId=instance["Id"], Name="F0", Type="CUSTOMER_QUEUE",
                                Content=content)  # another type may share a name
    pages = list(connect.get_paginator("list_contact_flows").paginate(
        InstanceId=instance["Id"], ContactFlowTypes=["CONTACT_FLOW"],
        PaginationConfig={"PageSize": 2}))
    assert len(pages) == 3
    listed = [f for page in pages for f in page["ContactFlowSummaryList"]]
    assert [f["Arn"] for f in listed] == [m["ContactFlowArn"] for m in made]
    assert {f["ContactFlowType"] for f in listed} == {"CONTACT_FLOW"}
    everything = connect.list_contact_flows(InstanceId=instance["Id"])["ContactFlowSummaryList"]
    assert [f["Name"] for f in everything].count("F0") == 2
    with pytest.raises(ClientError) as exc:
        connect.create_contact_flow(InstanceId=instance["Id"], Name="F1", Type="CONTACT_FLOW",
                                    Content=content)
    assert _error(exc)[0] == "DuplicateResourceException"


def test_seeded_flows_have_readable_names(sandbox: Sandbox) -> None:
    made = sandbox.seed(instances=1, numbers_per_instance=1, flows_per_instance=3, seed=4)
    listed = sandbox.client("connect").list_contact_flows(InstanceId=made["instances"][0]["id"])
    assert [f["Name"] for f in listed["ContactFlowSummaryList"]] == [
        "Main menu", "Sales", "Support"]
