"""``classify`` against every error the two seed APIs document, and the transport
errors the SDK raises."""

from __future__ import annotations

import botocore.session
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    InfiniteLoopConfigError,
    NoCredentialsError,
    ReadTimeoutError,
    SSOTokenLoadError,
    TokenRetrievalError,
    UnauthorizedSSOTokenError,
)
from connect_bulk.pipeline.classify import classify
from connect_bulk.pipeline.errors import (
    UNREACHABLE_S,
    AccessDenied,
    ClientFault,
    ConnectionFailed,
    FatalError,
    ServerError,
    Throttled,
    TransientError,
    unreachable,
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


@pytest.mark.parametrize("exc", [
    NoCredentialsError(), SSOTokenLoadError(error_msg="Token for corp does not exist"),
    UnauthorizedSSOTokenError(), TokenRetrievalError(provider="sso", error_msg="expired"),
    InfiniteLoopConfigError(source_profile="a", visited_profiles=["a", "b"]),
])
def test_credentials_that_cannot_be_had_stop_the_run(exc: Exception) -> None:
    error = classify(exc)
    assert type(error) is FatalError
    if "SSO" in type(exc).__name__ or "Token" in type(exc).__name__:
        assert "aws sso login" in error.message


def test_a_call_that_no_answer_came_to_while_nothing_else_answered_stops_the_run() -> None:
    """Attempts spent without an answer are the items' failure only while other calls are
    answered; when nothing is, the endpoint or the network is down."""
    dropped = ConnectionFailed("ConnectionClosedError", "closed")
    later = UNREACHABLE_S + 1
    # Nothing of the run was ever answered: at once, whatever the time.
    assert type(unreachable(dropped, silent_s=0.5, ever=False)) is FatalError
    # Answers came before, none since this call's first attempt, long enough ago.
    stopped = unreachable(dropped, silent_s=later, ever=True)
    assert type(stopped) is FatalError and f"for {later:.0f} s" in stopped.message
    # Not long enough, or another call was answered since: the items' failure, as before.
    assert unreachable(dropped, silent_s=UNREACHABLE_S / 2, ever=True) is dropped
    assert unreachable(dropped, silent_s=None, ever=True) is dropped
    # An answer that was an error is an answer: not a silent network.
    refused = ServerError("InternalServiceException", "500")
    assert unreachable(refused, silent_s=later, ever=False) is refused


@pytest.mark.parametrize("exc", [KeyError("FlowId"), TypeError("a job's bug"), ValueError()])
def test_an_exception_that_is_not_aws_s_is_a_bug_not_an_item_failure(exc: Exception) -> None:
    assert classify(exc) is None
