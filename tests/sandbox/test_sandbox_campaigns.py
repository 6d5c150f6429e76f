"""Outbound Campaigns onboarding in the sandbox (v1 and v2), through real boto3 clients.

The session's sandbox runs with --onboarding-seconds 0.5."""

from __future__ import annotations

import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.conftest import Sandbox

ONBOARDING_S = 0.5


def _instance(sandbox: Sandbox, region: str = "us-east-1") -> str:
    made = sandbox.client("connect", region=region).create_instance(
        IdentityManagementType="CONNECT_MANAGED", InboundCallsEnabled=True,
        OutboundCallsEnabled=True,
    )
    return str(made["Id"])


def _wait_until_done(client: Any, instance_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status: dict[str, Any] = client.get_instance_onboarding_job_status(
            connectInstanceId=instance_id
        )["connectInstanceOnboardingJobStatus"]
        if status["status"] != "IN_PROGRESS":
            return status
        time.sleep(0.1)
    raise AssertionError("onboarding job never finished")


def _code(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    response = exc.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture(params=["connectcampaigns", "connectcampaignsv2"])
def campaigns(request: pytest.FixtureRequest, sandbox: Sandbox) -> Any:
    return sandbox.client(request.param)


def test_onboarding_goes_in_progress_then_succeeded_with_a_real_kms_key(
    sandbox: Sandbox, campaigns: Any
) -> None:
    instance_id = _instance(sandbox)
    key_arn = sandbox.client("kms").create_key()["KeyMetadata"]["Arn"]
    encryption = {"enabled": True, "encryptionType": "KMS", "keyArn": key_arn}
    started = campaigns.start_instance_onboarding_job(
        connectInstanceId=instance_id, encryptionConfig=encryption
    )["connectInstanceOnboardingJobStatus"]
    assert started == {"connectInstanceId": instance_id, "status": "IN_PROGRESS"}
    assert _wait_until_done(campaigns, instance_id) == {
        "connectInstanceId": instance_id, "status": "SUCCEEDED"
    }
    config = campaigns.get_connect_instance_config(connectInstanceId=instance_id)
    assert config["connectInstanceConfig"]["encryptionConfig"] == encryption
    # A start on a succeeded job answers its status and starts nothing.
    again = campaigns.start_instance_onboarding_job(
        connectInstanceId=instance_id, encryptionConfig=encryption
    )["connectInstanceOnboardingJobStatus"]
    assert again["status"] == "SUCCEEDED"


def test_kms_alias_arns_are_keys_too(sandbox: Sandbox, campaigns: Any) -> None:
    instance_id = _instance(sandbox)
    kms = sandbox.client("kms")
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/campaigns", TargetKeyId=key_id)
    alias_arn = "arn:aws:kms:us-east-1:123456789012:alias/campaigns"
    campaigns.start_instance_onboarding_job(
        connectInstanceId=instance_id,
        encryptionConfig={"enabled": True, "encryptionType": "KMS", "keyArn": alias_arn},
    )
    assert _wait_until_done(campaigns, instance_id)["status"] == "SUCCEEDED"


def test_a_key_kms_does_not_have_fails_and_stays_failed_until_deleted(
    sandbox: Sandbox, campaigns: Any
) -> None:
    instance_id = _instance(sandbox)
    missing = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-4000-8000-000000000000"
    encryption = {"enabled": True, "encryptionType": "KMS", "keyArn": missing}
    first = campaigns.start_instance_onboarding_job(
        connectInstanceId=instance_id, encryptionConfig=encryption
    )["connectInstanceOnboardingJobStatus"]
    assert first["status"] == "IN_PROGRESS"
    failed = _wait_until_done(campaigns, instance_id)
    assert failed == {"connectInstanceId": instance_id, "status": "FAILED",
                      "failureCode": "KMS_KEY_NOT_FOUND"}
    # Sticky: starting again with the same config answers the FAILED job.
    again = campaigns.start_instance_onboarding_job(
        connectInstanceId=instance_id, encryptionConfig=encryption
    )["connectInstanceOnboardingJobStatus"]
    assert again == failed
    with pytest.raises(ClientError) as exc:
        campaigns.get_connect_instance_config(connectInstanceId=instance_id)
    assert _code(exc) == ("ResourceNotFoundException", 404)

    campaigns.delete_instance_onboarding_job(connectInstanceId=instance_id)
    with pytest.raises(ClientError) as exc:
        campaigns.get_instance_onboarding_job_status(connectInstanceId=instance_id)
    assert _code(exc) == ("ResourceNotFoundException", 404)
    restarted = campaigns.start_instance_onboarding_job(
        connectInstanceId=instance_id, encryptionConfig={"enabled": False}
    )["connectInstanceOnboardingJobStatus"]
    assert restarted["status"] == "IN_PROGRESS"
    assert _wait_until_done(campaigns, instance_id)["status"] == "SUCCEEDED"


def test_another_encryption_config_is_a_conflict(sandbox: Sandbox, campaigns: Any) -> None:
    instance_id = _instance(sandbox)
    campaigns.start_instance_onboarding_job(
        connectInstanceId=instance_id, encryptionConfig={"enabled": False}
    )
    key_arn = sandbox.client("kms").create_key()["KeyMetadata"]["Arn"]
    with pytest.raises(ClientError) as exc:
        campaigns.start_instance_onboarding_job(
            connectInstanceId=instance_id,
            encryptionConfig={"enabled": True, "encryptionType": "KMS", "keyArn": key_arn},
        )
    assert _code(exc) == ("ConflictException", 409)
    assert "IN_PROGRESS" in exc.value.response["Error"]["Message"]


def test_deleting_a_running_job_is_an_invalid_state(sandbox: Sandbox, campaigns: Any) -> None:
    instance_id = _instance(sandbox)
    campaigns.start_instance_onboarding_job(
        connectInstanceId=instance_id, encryptionConfig={"enabled": False}
    )
    with pytest.raises(ClientError) as exc:
        campaigns.delete_instance_onboarding_job(connectInstanceId=instance_id)
    assert _code(exc) == ("InvalidStateException", 409)


def test_unknown_instance_is_404(sandbox: Sandbox, campaigns: Any) -> None:
    with pytest.raises(ClientError) as exc:
        campaigns.start_instance_onboarding_job(
            connectInstanceId="00000000-0000-4000-8000-000000000000",
            encryptionConfig={"enabled": False},
        )
    assert _code(exc) == ("ResourceNotFoundException", 404)


def test_an_instance_of_another_region_is_404(sandbox: Sandbox) -> None:
    instance_id = _instance(sandbox, region="eu-west-2")
    with pytest.raises(ClientError) as exc:
        sandbox.client("connectcampaigns").start_instance_onboarding_job(
            connectInstanceId=instance_id, encryptionConfig={"enabled": False}
        )
    assert _code(exc) == ("ResourceNotFoundException", 404)


def test_encryption_enabled_without_a_key_is_a_validation_error(
    sandbox: Sandbox, campaigns: Any
) -> None:
    with pytest.raises(ClientError) as exc:
        campaigns.start_instance_onboarding_job(
            connectInstanceId=_instance(sandbox), encryptionConfig={"enabled": True}
        )
    assert _code(exc) == ("ValidationException", 400)


def test_v1_and_v2_share_one_state(sandbox: Sandbox) -> None:
    instance_id = _instance(sandbox)
    sandbox.client("connectcampaigns").start_instance_onboarding_job(
        connectInstanceId=instance_id, encryptionConfig={"enabled": False}
    )
    v2 = sandbox.client("connectcampaignsv2")
    assert _wait_until_done(v2, instance_id)["status"] == "SUCCEEDED"


def test_onboarding_time_changes_at_runtime(sandbox: Sandbox) -> None:
    sandbox.faults(onboarding_seconds=30)
    campaigns = sandbox.client("connectcampaigns")
    instance_id = _instance(sandbox)
    campaigns.start_instance_onboarding_job(
        connectInstanceId=instance_id, encryptionConfig={"enabled": False}
    )
    time.sleep(ONBOARDING_S + 0.2)
    status = campaigns.get_instance_onboarding_job_status(connectInstanceId=instance_id)
    assert status["connectInstanceOnboardingJobStatus"]["status"] == "IN_PROGRESS"
    sandbox.reset()
    assert sandbox.control("faults")["onboarding_seconds"] == ONBOARDING_S
