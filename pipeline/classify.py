"""What an exception raised by an AWS call stands for: a throttle, a transient error to retry,
the item's fault, or an error no call of the run can get past (``classify``)."""

from __future__ import annotations

import asyncio
from typing import Any

from .errors import (
    AccessDenied,
    CallError,
    ClientFault,
    ConnectionFailed,
    FatalError,
    ServerError,
    Throttled,
)

# https://docs.aws.amazon.com/sdkref/latest/guide/feature-retry-behavior.html lists the codes the
# SDKs treat as throttling; these are the ones AWS services answer with.
THROTTLING_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException",
    "TransactionInProgressException", "RequestLimitExceeded", "BandwidthLimitExceeded",
    "RequestThrottled", "SlowDown", "PriorRequestNotComplete", "EC2ThrottledException",
})
TRANSIENT_CODES = frozenset({
    "InternalServiceException", "InternalServerException", "InternalServerError",
    "InternalFailure", "InternalError", "ServiceUnavailable", "ServiceUnavailableException",
    "RequestTimeout", "RequestTimeoutException",
})
# No call of the run can succeed with these credentials: stop instead of failing every item.
FATAL_CODES = frozenset({
    "UnrecognizedClientException", "InvalidClientTokenId", "ExpiredToken",
    "ExpiredTokenException", "InvalidSignatureException", "SignatureDoesNotMatch",
    "MissingAuthenticationToken", "IncompleteSignature", "AuthFailure",
})


# Refused for lack of permission, whatever the item.
ACCESS_CODES = frozenset({"AccessDeniedException", "AccessDenied", "UnauthorizedOperation",
                          "UnauthorizedException", "NotAuthorized"})


def classify(exc: BaseException) -> CallError | None:
    """The ``CallError`` an exception raised by an AWS call stands for; None when it is not
    an AWS or transport error at all (a bug, to be raised as it is)."""
    if isinstance(exc, CallError):
        return exc
    from botocore import exceptions as boto

    if isinstance(exc, boto.ClientError):
        response: dict[str, Any] = exc.response
        error = response.get("Error", {})
        code = str(error.get("Code") or "Unknown")
        message = str(error.get("Message") or exc)
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        status = int(status) if status is not None else None
        if code in THROTTLING_CODES or status == 429:
            return Throttled(code, message, http_status=status)
        if code in FATAL_CODES:
            return FatalError(code, message, http_status=status)
        if code in ACCESS_CODES:
            return AccessDenied(code, message, http_status=status)
        if code in TRANSIENT_CODES or (status is not None and status >= 500):
            return ServerError(code, message, http_status=status)
        return ClientFault(code, message, http_status=status)
    if isinstance(exc, boto.SSOError | boto.TokenRetrievalError):
        # An SSO sign-in that expired (the nightly run's usual way to lose its credentials):
        # no call of the run can succeed until the user signs in again.
        return FatalError(type(exc).__name__, f"{exc}; sign in again (aws sso login), then "
                          "resume")
    if isinstance(exc, boto.NoCredentialsError | boto.PartialCredentialsError
                  | boto.ProfileNotFound | boto.NoRegionError | boto.CredentialRetrievalError
                  | boto.UnknownCredentialError | boto.NoAuthTokenError
                  | boto.InvalidConfigError | boto.ConfigNotFound):
        return FatalError(type(exc).__name__, str(exc))
    import aiohttp  # aiobotocore's transport

    connection_errors: tuple[type[BaseException], ...] = (
        boto.EndpointConnectionError, boto.ConnectionClosedError, boto.ReadTimeoutError,
        boto.ConnectTimeoutError, boto.ConnectionError, boto.HTTPClientError,
        asyncio.TimeoutError, TimeoutError, ConnectionError, aiohttp.ClientError,
    )
    if isinstance(exc, connection_errors):
        return ConnectionFailed(type(exc).__name__, str(exc) or type(exc).__name__)
    if isinstance(exc, boto.ParamValidationError):
        return ClientFault("ParamValidationError", str(exc))
    if isinstance(exc, boto.BotoCoreError):
        return ClientFault(type(exc).__name__, str(exc) or type(exc).__name__)
    return None
