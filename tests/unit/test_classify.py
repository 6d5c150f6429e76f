"""``aws.classify`` against every error the two seed APIs document, and the transport
errors the SDK raises."""

from __future__ import annotations

import botocore.session
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from connect_bulk.pipeline.aws import classify
from connect_bulk.pipeline.errors import (
    AccessDenied,
    ClientFault,
    ConnectionFailed,
    FatalError,
    ServerError,
    Throttled,
    TransientError,
)

SEED_APIS = [("connect", "BatchGetFlowAssociation"),
             ("connectcampaigns", "StartInstanceOnboardingJob"),
             ("connectcampaignsv2", "StartInstanceOnboardingJob"),
             ("connectcampaigns", "GetInstanceOnboardingJobStatus")]


def _documented() -> list[tuple[str, str, int]]:
    session = botocore.session.get_session()
    found = set()
    for service, operation in SEED_APIS:
        model = session.get_service_model(service).operation_model(operation)
        for shape in model.error_shapes:
            status = shape.metadata.get("error", {}).get("httpStatusCode", 400)
            found.add((f"{service}.{operation}", shape.name, status))
    return sorted(found)


EXPECTED = {
    "ThrottlingException": Throttled,
    "InternalServiceException": ServerError,
    "InternalServerException": ServerError,
    "AccessDeniedException": AccessDenied,
    "ResourceNotFoundException": ClientFault,
    "InvalidRequestException": ClientFault,
    "InvalidParameterException": ClientFault,
    "ValidationException": ClientFault,
    "ConflictException": ClientFault,
}


@pytest.mark.parametrize(("where", "code", "status"), _documented())
def test_every_documented_error_is_classified(where: str, code: str, status: int) -> None:
    assert code in EXPECTED, f"{where} documents {code}: decide how to classify it"
    error = classify(ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        where.split(".")[1],
    ))
    assert type(error) is EXPECTED[code]
    assert (error.code, error.http_status) == (code, status)
    assert error.retryable is issubclass(EXPECTED[code], TransientError)


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [("Whatever", 429, Throttled), ("Whatever", 503, ServerError),
     ("ExpiredTokenException", 400, FatalError), ("UnrecognizedClientException", 403, FatalError),
     ("SomethingNew", 400, ClientFault)],
)
def test_status_codes_and_credentials(code: str, status: int, kind: type) -> None:
    error = classify(ClientError(
        {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op"))
    assert type(error) is kind


@pytest.mark.parametrize(
    "exc",
    [EndpointConnectionError(endpoint_url="http://x"), ConnectionClosedError(endpoint_url="x"),
     ReadTimeoutError(endpoint_url="x"), TimeoutError(), ConnectionResetError()],
)
def test_transport_errors_are_connection_failures(exc: Exception) -> None:
    error = classify(exc)
    assert type(error) is ConnectionFailed
    assert error.retryable


def test_missing_credentials_stop_the_run() -> None:
    assert type(classify(NoCredentialsError())) is FatalError


@pytest.mark.parametrize("exc", [KeyError("FlowId"), TypeError("a job's bug"), ValueError()])
def test_an_exception_that_is_not_aws_s_is_a_bug_not_an_item_failure(exc: Exception) -> None:
    assert classify(exc) is None
