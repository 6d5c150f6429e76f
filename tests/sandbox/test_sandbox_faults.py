"""Faults and counters of the sandbox, seen from real boto3 and aioboto3 clients."""

from __future__ import annotations

import time
from typing import Any

import aioboto3
import anyio
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError

from tests.conftest import CREDENTIALS, Sandbox

OP = "BatchGetFlowAssociation"


@pytest.fixture
def seeded(sandbox: Sandbox) -> dict[str, Any]:
    world = sandbox.seed(instances=1, numbers_per_instance=5, flows_per_instance=1,
                         associated_fraction=1.0, seed=7)
    instance = world["instances"][0]
    connect = sandbox.client("connect")
    numbers = connect.list_phone_numbers_v2(InstanceId=instance["id"])
    return {
        "instance": instance["id"],
        "ids": [n["PhoneNumberArn"] for n in numbers["ListPhoneNumbersSummaryList"]],
    }


def _call(client: Any, seeded: dict[str, Any]) -> str:
    """Make one call and name its outcome: ok, or the error code."""
    try:
        client.batch_get_flow_association(InstanceId=seeded["instance"], ResourceIds=seeded["ids"])
    except ClientError as exc:
        return str(exc.response["Error"]["Code"])
    except (ConnectionClosedError, EndpointConnectionError):
        return "dropped"
    return "ok"


def test_quota_throttles_beyond_the_bucket_and_stats_count_it(
    sandbox: Sandbox, seeded: dict[str, Any]
) -> None:
    sandbox.faults(quota=[f"{OP}=1/3"])
    client = sandbox.client("connect")
    outcomes = [_call(client, seeded) for _ in range(10)]
    # A burst of 3, then about one a second: 10 quick calls cannot all pass.
    assert outcomes[:3] == ["ok"] * 3
    assert "ThrottlingException" in outcomes
    assert set(outcomes) == {"ok", "ThrottlingException"}
    stats = sandbox.stats()
    assert stats["calls"][OP] == 10
    assert stats["throttled"][OP] == outcomes.count("ThrottlingException")
    # Other operations have no quota here.
    assert "ListPhoneNumbersV2" not in stats["throttled"]


def test_throttling_is_http_429_and_the_sdk_sees_a_throttle(
    sandbox: Sandbox, seeded: dict[str, Any]
) -> None:
    sandbox.faults(quota=["*=1/1"])
    client = sandbox.client("connect")
    _call(client, seeded)
    with pytest.raises(ClientError) as exc:
        client.batch_get_flow_association(InstanceId=seeded["instance"], ResourceIds=seeded["ids"])
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert exc.value.response["Error"]["Code"] == "ThrottlingException"


def test_quotas_count_per_region(sandbox: Sandbox, seeded: dict[str, Any]) -> None:
    sandbox.faults(quota=["*=0.1/1"])
    east, west = sandbox.client("connect"), sandbox.client("connect", region="us-west-2")
    assert west.list_instances()["InstanceSummaryList"] == []  # west's own bucket
    assert _call(east, seeded) == "ok"
    assert _call(east, seeded) == "ThrottlingException"
    with pytest.raises(ClientError) as exc:
        west.list_instances()
    assert exc.value.response["Error"]["Code"] == "ThrottlingException"


def test_error_rate_answers_the_services_own_500(sandbox: Sandbox, seeded: dict[str, Any]) -> None:
    sandbox.faults(error_rate=1.0)
    connect = sandbox.client("connect")
    with pytest.raises(ClientError) as exc:
        connect.batch_get_flow_association(InstanceId=seeded["instance"], ResourceIds=seeded["ids"])
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert exc.value.response["Error"]["Code"] == "InternalServiceException"
    with pytest.raises(ClientError) as exc:
        sandbox.client("connectcampaigns").get_instance_onboarding_job_status(
            connectInstanceId=seeded["instance"]
        )
    assert exc.value.response["Error"]["Code"] == "InternalServerException"
    assert sandbox.stats()["errors"] == {OP: 1, "GetInstanceOnboardingJobStatus": 1}


def test_partial_error_rate_matches_the_counters(sandbox: Sandbox, seeded: dict[str, Any]) -> None:
    sandbox.faults(error_rate=0.3)
    client = sandbox.client("connect")
    outcomes = [_call(client, seeded) for _ in range(100)]
    errors = outcomes.count("InternalServiceException")
    assert 0 < errors < 100
    assert outcomes.count("ok") == 100 - errors
    assert sandbox.stats()["errors"][OP] == errors


def test_drop_rate_closes_the_connection_without_an_answer(
    sandbox: Sandbox, seeded: dict[str, Any]
) -> None:
    sandbox.faults(drop_rate=1.0)
    client = sandbox.client("connect")
    assert [_call(client, seeded) for _ in range(3)] == ["dropped"] * 3
    assert sandbox.stats()["dropped"][OP] == 3
    sandbox.faults(drop_rate=0.0)
    assert _call(client, seeded) == "ok"


def test_latency_delays_every_answer(sandbox: Sandbox, seeded: dict[str, Any]) -> None:
    client = sandbox.client("connect")
    sandbox.faults(latency_ms=300, jitter_ms=50)
    started = time.perf_counter()
    assert _call(client, seeded) == "ok"
    assert time.perf_counter() - started >= 0.3


def test_faults_change_at_runtime_and_reset_restores_start_up_faults(
    sandbox: Sandbox, seeded: dict[str, Any]
) -> None:
    changed = sandbox.faults(error_rate=0.25, quota={"ListInstances": {"rate": 5, "burst": 2}})
    assert changed["error_rate"] == 0.25
    assert changed["quota"] == ["ListInstances=5/2"]
    assert sandbox.control("faults")["quota"] == ["ListInstances=5/2"]
    _call(sandbox.client("connect"), seeded)
    sandbox.reset()
    assert sandbox.control("faults")["error_rate"] == 0.0
    assert sandbox.control("faults")["quota"] == []
    assert sandbox.stats() == {"calls": {}, "throttled": {}, "errors": {}, "dropped": {},
                               "calls_by_scope": {}, "throttled_by_scope": {}}
    assert sandbox.client("connect").list_instances()["InstanceSummaryList"] == []


@pytest.mark.parametrize(
    "bad",
    [{"error_rate": 2}, {"latency_ms": -1}, {"quota": ["nope"]}, {"quota": ["X=0"]},
     {"colour": "red"}],
)
def test_bad_fault_settings_are_refused_with_400(sandbox: Sandbox, bad: dict[str, Any]) -> None:
    import urllib.error

    with pytest.raises(urllib.error.HTTPError) as exc:
        sandbox.faults(**bad)
    assert exc.value.code == 400
    exc.value.close()


def test_aioboto3_clients_talk_to_the_sandbox_concurrently(
    sandbox: Sandbox, seeded: dict[str, Any]
) -> None:
    async def main() -> list[int]:
        session = aioboto3.Session(**CREDENTIALS, region_name="us-east-1")
        sizes: list[int] = []
        config = Config(retries={"total_max_attempts": 1, "mode": "standard"})
        async with session.client("connect", endpoint_url=sandbox.url, config=config) as client:

            async def one() -> None:
                answer = await client.batch_get_flow_association(
                    InstanceId=seeded["instance"], ResourceIds=seeded["ids"]
                )
                sizes.append(len(answer["FlowAssociationSummaryList"]))

            async with anyio.create_task_group() as group:
                for _ in range(20):
                    group.start_soon(one)
        return sizes

    assert anyio.run(main) == [5] * 20
    assert sandbox.stats()["calls"][OP] == 20



def test_connections_are_kept_alive_as_aws_endpoints_keep_them(
    sandbox: Sandbox, seeded: dict[str, Any]
) -> None:
    import http.client
    from urllib.parse import urlsplit

    url = urlsplit(sandbox.url)
    connection = http.client.HTTPConnection(url.hostname or "", url.port)
    connection.connect()
    first = connection.sock
    for _ in range(3):
        connection.request("GET", "/_sandbox/stats")
        response = connection.getresponse()
        response.read()
        assert response.status == 200
        assert response.version == 11
        assert response.getheader("Connection", "").lower() != "close"
    assert connection.sock is first  # one TCP connection for every request
    connection.close()
    # and a real client's calls, after a dropped one, go on over a connection of their own
    sandbox.faults(drop_rate=1.0)
    client = sandbox.client("connect")
    assert _call(client, seeded) == "dropped"
    sandbox.faults(drop_rate=0.0)
    assert [_call(client, seeded) for _ in range(3)] == ["ok"] * 3
