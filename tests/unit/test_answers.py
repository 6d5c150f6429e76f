"""``answers``: a successful rest-json answer read with orjson gives what botocore's own parser
gives, through real clients against the sandbox and on answers made to differ from the model;
anything it does not read the way botocore does is botocore's. The engine's requests carry the
User-Agent made once for them."""

from __future__ import annotations

import json
import platform
from typing import Any

import aiobotocore
import anyio
import botocore
import botocore.session
import pytest
from aiobotocore.parsers import AioRestJSONParser
from aiobotocore.session import get_session
from connect_bulk.pipeline import __version__
from connect_bulk.pipeline.answers import Parsers, PlainJSON, botocore_session, reader
from connect_bulk.pipeline.aws import AwsSettings, Caller

from tests.cli.world import build_world
from tests.conftest import CREDENTIALS, NO_RETRIES, Sandbox

CONNECT = botocore.session.get_session().get_service_model("connect")


def _without_metadata(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k != "ResponseMetadata"}


def test_answers_read_with_orjson_are_botocores_through_real_clients(sandbox: Sandbox) -> None:
    world = build_world(sandbox, instances=1, numbers_per_instance=6)
    instance = world.instances[0]
    numbers = [n.arn for n in world.numbers]
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("connect", "batch_get_flow_association",
         {"InstanceId": instance["Id"], "ResourceIds": numbers,
          "ResourceType": "VOICE_PHONE_NUMBER"}),
        ("connect", "list_phone_numbers_v2", {"InstanceId": instance["Id"]}),
        ("connect", "list_contact_flows", {"InstanceId": instance["Id"]}),
        ("connect", "describe_phone_number", {"PhoneNumberId": world.numbers[0].id}),
        ("connect", "describe_instance", {"InstanceId": instance["Id"]}),  # botocore's
    ]

    async def ask(session: Any) -> list[dict[str, Any]]:
        answers = []
        for service, method, params in calls:
            async with session.create_client(service, region_name="us-east-1",
                                             endpoint_url=sandbox.url, config=NO_RETRIES,
                                             **CREDENTIALS) as client:
                answers.append(await getattr(client, method)(**params))
        return answers

    session = botocore_session()

    async def both() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return await ask(get_session()), await ask(session)

    standard, fast = anyio.run(both)
    read = {shape.name for shape, made in
            session.get_component("response_parser_factory").readers.items() if made}
    assert read == {"BatchGetFlowAssociationResponse", "ListPhoneNumbersV2Response",
                    "ListContactFlowsResponse", "DescribePhoneNumberResponse"}
    for (_, method, _), want, got in zip(calls, standard, fast, strict=True):
        assert _without_metadata(got) == _without_metadata(want), method
        assert set(got["ResponseMetadata"]) == set(want["ResponseMetadata"]), method
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 200
    flows = {s["ResourceId"]: s["FlowId"].rsplit("/", 1)[-1]
             for s in fast[0]["FlowAssociationSummaryList"]}
    assert flows == {n.arn: n.flow_arn.rsplit("/", 1)[-1] for n in world.numbers if n.flow_arn}


class Counted(AioRestJSONParser):  # type: ignore[misc]
    """botocore's parser, counting the answers it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.parsed = 0

    async def parse(self, response: dict[str, Any], shape: Any) -> Any:
        self.parsed += 1
        return await super().parse(response, shape)


def _parse(operation: str, body: Any, status: int = 200) -> tuple[Any, Any, bool]:
    """What botocore's parser and ``PlainJSON`` make of one answer (or the type of what each
    raised), and whether ``PlainJSON`` gave it to botocore's."""
    shape = CONNECT.operation_model(operation).output_shape
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()

    def response() -> dict[str, Any]:
        return {"status_code": status, "body": raw, "context": {},
                "headers": {"x-amzn-RequestId": "r-1", "Content-Type": "application/json"}}

    async def outcome(parser: Any) -> Any:
        try:
            return await parser.parse(response(), shape)
        except Exception as exc:  # botocore's own, on a body it cannot read
            return type(exc)

    wrapped = Counted()

    async def both() -> tuple[Any, Any]:
        return (await outcome(AioRestJSONParser()),
                await outcome(PlainJSON(wrapped, {})))

    want, got = anyio.run(both)
    return want, got, wrapped.parsed > 0


SUMMARY = {"ResourceId": "arn:aws:connect:us-east-1:111122223333:phone-number/n1",
           "FlowId": "f1", "ResourceType": "VOICE_PHONE_NUMBER"}


@pytest.mark.parametrize(("case", "body", "botocores"), [
    ("as modelled", {"FlowAssociationSummaryList": [SUMMARY, SUMMARY]}, False),
    ("nulls", {"FlowAssociationSummaryList": [SUMMARY | {"FlowId": None}], "NextToken": None},
     False),
    ("members the model does not know",
     {"FlowAssociationSummaryList": [SUMMARY | {"Extra": {"x": 1}}], "Other": [1, 2]}, False),
    ("an empty body", b"", False),
    ("an empty list", {"FlowAssociationSummaryList": []}, False),
    ("a number where a string is modelled",
     {"FlowAssociationSummaryList": [SUMMARY | {"FlowId": 7}]}, True),
    ("an object where a list is modelled", {"FlowAssociationSummaryList": {"a": 1}}, True),
    ("not an object", [1, 2], True),
    ("not JSON", b"<html>oops</html>", True),
])
def test_each_answer_reads_as_botocore_reads_it(case: str, body: Any, botocores: bool) -> None:
    want, got, given = _parse("BatchGetFlowAssociation", body)
    assert got == want, case
    assert given == botocores, case


@pytest.mark.parametrize(("case", "tags"), [
    ("a map", {"team": "billing", "cost-centre": "42"}),
    ("a null in a map", {"team": None, "cost-centre": "42"}),
    ("a number in a map of strings", {"team": 7}),
])
def test_a_map_reads_as_botocore_reads_it(case: str, tags: Any) -> None:
    body = {"ClaimedPhoneNumberSummary": {"PhoneNumberId": "n1", "PhoneNumber": "+15550100",
                                          "Tags": tags}}
    want, got, given = _parse("DescribePhoneNumber", body)
    assert got == want, case
    assert given == (case == "a number in a map of strings"), case


def test_an_error_answer_is_botocores() -> None:
    body = {"__type": "ThrottlingException", "Message": "slow down"}
    want, got, given = _parse("BatchGetFlowAssociation", body, status=429)
    assert got == want
    assert given
    assert got["Error"]["Code"] == "ThrottlingException"


def test_shapes_it_leaves_to_botocore() -> None:
    def readable(operation: str) -> bool:
        return reader(CONNECT.operation_model(operation).output_shape) is not None

    assert readable("BatchGetFlowAssociation")
    assert readable("ListPhoneNumbersV2")
    assert not readable("DescribeInstance")  # CreatedTime: a timestamp
    assert not readable("AssociatePhoneNumberContactFlow")  # no output shape


def test_only_rest_json_parsers_are_wrapped() -> None:
    parsers = Parsers()
    assert isinstance(parsers.create_parser("rest-json"), PlainJSON)
    assert not isinstance(parsers.create_parser("query"), PlainJSON)


@pytest.mark.parametrize("app_id", [None, "nightly-migration"])
def test_requests_carry_connect_bulks_user_agent(sandbox: Sandbox, app_id: str | None,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Made once, not by botocore for every request: connect-bulk's name first (as CloudTrail
    shows who made a change), the libraries under it, and the user's application ID."""
    if app_id:
        monkeypatch.setenv("AWS_SDK_UA_APP_ID", app_id)
    world = build_world(sandbox, instances=1, numbers_per_instance=1)
    sent: list[str] = []

    def capture(request: Any, **_: Any) -> None:
        agent = request.headers["User-Agent"]  # bytes, once the request is prepared
        sent.append(agent.decode() if isinstance(agent, bytes) else agent)

    async def main() -> None:
        settings = AwsSettings(endpoint_url=sandbox.url, region="us-east-1")
        async with Caller(settings) as caller:
            client = await caller.client("connect", "us-east-1")
            client.meta.events.register("before-send.connect", capture)
            for _ in range(2):
                await caller.call("connect", "DescribeInstance", region="us-east-1",
                                  account="123456789012", InstanceId=world.instances[0]["Id"])

    anyio.run(main)
    assert len(sent) == 2 and sent[0] == sent[1]
    agent = sent[0].split()
    assert agent[:3] == [f"connect-bulk/{__version__}", f"aiobotocore/{aiobotocore.__version__}",
                         f"botocore/{botocore.__version__}"]
    assert agent[3] == f"Python/{platform.python_version()}"
    assert agent[5:] == ([f"app/{app_id}"] if app_id else []), " ".join(agent)
