"""Outbound Campaigns instance onboarding (v1 ``connectcampaigns`` and v2
``connectcampaignsv2``), replacing moto's always-succeeds stand-in with the lifecycle AWS has:
a job goes ``IN_PROGRESS``, then ``SUCCEEDED`` after the onboarding time, or ``FAILED`` with
``KMS_KEY_NOT_FOUND`` when the encryption key does not exist in KMS. A FAILED job stays until
``DeleteInstanceOnboardingJob``; a second start returns the job's status, or
``ConflictException`` when it asks for another encryption config.

Both API versions share one state, as they do on AWS.

AWS references:
https://docs.aws.amazon.com/connect-outbound/latest/APIReference/API_StartInstanceOnboardingJob.html
https://docs.aws.amazon.com/connect/latest/APIReference/API_connect-outbound-campaigns-v2_StartInstanceOnboardingJob.html
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from moto.connect.models import connect_backends
from moto.core.base_backend import BackendDict, BaseBackend
from moto.core.exceptions import JsonRESTError
from moto.core.responses import BaseResponse
from moto.kms.models import kms_backends

from .validation import ValidatingResponse


class ResourceNotFoundException(JsonRESTError):
    code = 404

    def __init__(self, message: str) -> None:
        super().__init__("ResourceNotFoundException", message)


class ValidationException(JsonRESTError):
    code = 400

    def __init__(self, message: str) -> None:
        super().__init__("ValidationException", message)


class ConflictException(JsonRESTError):
    code = 409

    def __init__(self, message: str) -> None:
        super().__init__("ConflictException", message)


class InvalidStateException(JsonRESTError):
    code = 409

    def __init__(self, message: str) -> None:
        super().__init__("InvalidStateException", message)


class OnboardingClock:
    """How long a job stays IN_PROGRESS; set by the server, changeable at runtime."""

    def __init__(self, seconds: float = 2.0) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()

    def set(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("onboarding_seconds must be >= 0")
        with self._lock:
            self.seconds = seconds


ONBOARDING = OnboardingClock()


@dataclass(frozen=True, slots=True)
class Encryption:
    enabled: bool
    key_arn: str | None

    @classmethod
    def from_request(cls, config: dict[str, Any]) -> Encryption:
        enabled = bool(config.get("enabled"))
        key_arn = config.get("keyArn") or None
        if enabled and not key_arn:
            raise ValidationException("keyArn is required when encryption is enabled")
        return cls(enabled=enabled, key_arn=key_arn if enabled else None)

    def to_json(self) -> dict[str, Any]:
        config: dict[str, Any] = {"enabled": self.enabled}
        if self.enabled:
            config |= {"encryptionType": "KMS", "keyArn": self.key_arn}
        return config


@dataclass(slots=True)
class OnboardingJob:
    instance_id: str
    encryption: Encryption
    started: float
    seconds: float
    failure_code: str | None

    @property
    def status(self) -> str:
        if time.monotonic() - self.started < self.seconds:
            return "IN_PROGRESS"
        return "FAILED" if self.failure_code else "SUCCEEDED"

    def to_json(self) -> dict[str, Any]:
        status = self.status
        result: dict[str, Any] = {"connectInstanceId": self.instance_id, "status": status}
        if status == "FAILED":
            result["failureCode"] = self.failure_code
        return result


class CampaignsSandboxBackend(BaseBackend):
    """Onboarding jobs and instance configs of one account and region."""

    def __init__(self, region_name: str, account_id: str) -> None:
        super().__init__(region_name, account_id)
        self.jobs: dict[str, OnboardingJob] = {}
        # Instances onboarded so long ago that AWS no longer keeps their job status.
        self.onboarded: dict[str, Encryption] = {}

    def _require_instance(self, instance_id: str) -> None:
        if instance_id not in connect_backends[self.account_id][self.region_name].instances:
            raise ResourceNotFoundException(f"Amazon Connect instance {instance_id} not found")

    def _key_exists(self, key_arn: str) -> bool:
        region, account = self.region_name, self.account_id
        if key_arn.startswith("arn:"):
            parts = key_arn.split(":", 5)
            if len(parts) != 6 or parts[2] != "kms":
                return False
            region, account = parts[3], parts[4]
        kms = kms_backends[account][region]
        try:
            return kms.any_id_to_key_id(key_arn) in kms.keys
        except (KeyError, TypeError, AttributeError):
            return False

    def start(self, instance_id: str, encryption: Encryption) -> OnboardingJob:
        self._require_instance(instance_id)
        job = self.jobs.get(instance_id)
        if job is not None:
            if job.encryption != encryption:
                raise ConflictException(
                    f"An onboarding job for instance {instance_id} already exists with another "
                    f"encryption config (status {job.status})"
                )
            return job
        failure = None
        if encryption.enabled and not self._key_exists(encryption.key_arn or ""):
            failure = "KMS_KEY_NOT_FOUND"
        job = OnboardingJob(
            instance_id=instance_id,
            encryption=encryption,
            started=time.monotonic(),
            seconds=ONBOARDING.seconds,
            failure_code=failure,
        )
        self.jobs[instance_id] = job
        return job

    def get(self, instance_id: str) -> OnboardingJob:
        job = self.jobs.get(instance_id)
        if job is None:
            raise ResourceNotFoundException(f"No onboarding job for instance {instance_id}")
        return job

    def delete(self, instance_id: str) -> None:
        job = self.get(instance_id)
        if job.status == "IN_PROGRESS":
            raise InvalidStateException(f"The onboarding job for {instance_id} is in progress")
        del self.jobs[instance_id]

    def expire_succeeded_jobs(self) -> list[str]:
        """Forget the status of every SUCCEEDED job, keeping the instance onboarded: what AWS
        shows for instances onboarded long ago (GetInstanceOnboardingJobStatus answers 404,
        GetConnectInstanceConfig still answers)."""
        expired = [i for i, job in self.jobs.items() if job.status == "SUCCEEDED"]
        for instance_id in expired:
            self.onboarded[instance_id] = self.jobs.pop(instance_id).encryption
        return expired

    def config(self, instance_id: str) -> dict[str, Any]:
        self._require_instance(instance_id)
        job = self.jobs.get(instance_id)
        if job is not None and job.status == "SUCCEEDED":
            encryption = job.encryption
        elif instance_id in self.onboarded:
            encryption = self.onboarded[instance_id]
        else:
            raise ResourceNotFoundException(
                f"Instance {instance_id} is not onboarded to outbound campaigns"
            )
        return {
            "connectInstanceId": instance_id,
            "serviceLinkedRoleArn": (
                f"arn:aws:iam::{self.account_id}:role/aws-service-role/"
                "connect-campaigns.amazonaws.com/AWSServiceRoleForConnectCampaigns"
            ),
            "encryptionConfig": encryption.to_json(),
        }


campaigns_sandbox_backends = BackendDict(CampaignsSandboxBackend, "connectcampaigns")


class CampaignsV1Response(ValidatingResponse, BaseResponse):
    validation_error = ValidationException
    api = "connectcampaigns"

    def __init__(self) -> None:
        super().__init__(service_name=self.api)
        self.automated_parameter_parsing = True

    @property
    def backend(self) -> CampaignsSandboxBackend:
        backend: CampaignsSandboxBackend = campaigns_sandbox_backends[self.current_account][
            self.region
        ]
        return backend

    def start_instance_onboarding_job(self) -> str:
        params = self.validated()
        job = self.backend.start(
            params["connectInstanceId"], Encryption.from_request(params["encryptionConfig"])
        )
        return json.dumps({"connectInstanceOnboardingJobStatus": job.to_json()})

    def get_instance_onboarding_job_status(self) -> str:
        params = self.validated()
        job = self.backend.get(params["connectInstanceId"])
        return json.dumps({"connectInstanceOnboardingJobStatus": job.to_json()})

    def delete_instance_onboarding_job(self) -> str:
        params = self.validated()
        self.backend.delete(params["connectInstanceId"])
        return "{}"

    def get_connect_instance_config(self) -> str:
        params = self.validated()
        return json.dumps(
            {"connectInstanceConfig": self.backend.config(params["connectInstanceId"])}
        )


class CampaignsV2Response(CampaignsV1Response):
    api = "connectcampaignsv2"


INSTANCE = "(?P<connectInstanceId>[^/]+)"
URL_PATHS = {
    "{0}/connect-instance/" + INSTANCE + "/onboarding$": CampaignsV1Response.dispatch,
    "{0}/connect-instance/" + INSTANCE + "/config$": CampaignsV1Response.dispatch,
    "{0}/v2/connect-instance/" + INSTANCE + "/onboarding$": CampaignsV2Response.dispatch,
    "{0}/v2/connect-instance/" + INSTANCE + "/config$": CampaignsV2Response.dispatch,
}
