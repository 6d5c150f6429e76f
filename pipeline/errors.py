"""Every error connect-bulk raises, in one tree; "should we retry" is a type question.

::

    ConnectBulkError
    ├── UsageError            bad options or a refused run (exit 2); nothing was called
    │   ├── InputError        an input file that cannot be read or lacks a column (exit 2)
    │   └── DamagedRun        a file of the run directory too damaged to continue (exit 2)
    ├── StorageError          the run's files cannot be written mid-run: disk full, read-only
    │                         (exit 3, aborted; resume continues once the cause is fixed)
    ├── RunLocked             another process holds the run directory (exit 75)
    ├── Abandoned             a call not retried because the run is stopping; items stay pending
    └── CallError             one AWS call failed, classified by ``classify``
        ├── TransientError    marker: worth another attempt
        │   ├── Throttled         429 / ThrottlingException and friends
        │   ├── ServerError       5xx
        │   └── ConnectionFailed  no answer: refused, dropped, timed out
        └── TerminalError     marker: another attempt gives the same answer
            ├── ClientFault       4xx: the request itself is wrong for this item
            └── FatalError        credentials or access: no call of the run can succeed

``classify`` maps every botocore/aiohttp exception to the most specific of these, in one
place; the engine never looks at a botocore exception itself.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .redact import redact


class ConnectBulkError(Exception):
    """Root of connect-bulk's errors."""

    exit_code = 1


class UsageError(ConnectBulkError):
    exit_code = 2


class InputError(UsageError):
    pass


class DamagedRun(UsageError):
    """A file of the run directory that cannot be trusted; the message names it."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"{path}: {problem}; the run cannot continue until it is repaired or "
                         "removed")
        self.path = path


class StorageError(ConnectBulkError):
    exit_code = 3


class RunLocked(ConnectBulkError):
    exit_code = 75


class Abandoned(ConnectBulkError):
    """A failed attempt that is not retried because the run is stopping."""


class CallError(ConnectBulkError):
    """An AWS call that failed; ``attempts`` is filled in by whoever retried it."""

    retryable = False

    def __init__(
        self, code: str, message: str, *, http_status: int | None = None, attempts: int = 1
    ) -> None:
        # AWS quotes requests back (signature mismatches quote the canonical request, token
        # header included): nothing secret survives into what is logged or stored, and what is
        # left stands on one line.
        message = " ".join(redact(message).split())
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.http_status = http_status
        self.attempts = attempts


class TransientError(CallError):
    retryable = True


class Throttled(TransientError):
    pass


class ServerError(TransientError):
    pass


class ConnectionFailed(TransientError):
    pass


class TerminalError(CallError):
    pass


class ClientFault(TerminalError):
    pass


class FatalError(TerminalError):
    pass


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


def classify(exc: BaseException) -> CallError:
    """The ``CallError`` an exception raised by an AWS call stands for."""
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
        if code in TRANSIENT_CODES or (status is not None and status >= 500):
            return ServerError(code, message, http_status=status)
        return ClientFault(code, message, http_status=status)
    if isinstance(exc, boto.NoCredentialsError | boto.PartialCredentialsError
                  | boto.ProfileNotFound | boto.NoRegionError | boto.CredentialRetrievalError):
        return FatalError(type(exc).__name__, str(exc))
    connection_errors: tuple[type[BaseException], ...] = (
        boto.EndpointConnectionError, boto.ConnectionClosedError, boto.ReadTimeoutError,
        boto.ConnectTimeoutError, boto.ConnectionError, boto.HTTPClientError,
        asyncio.TimeoutError, TimeoutError, ConnectionError,
    )
    try:
        import aiohttp

        connection_errors += (aiohttp.ClientError,)
    except ImportError:  # pragma: no cover - aiohttp comes with aiobotocore
        pass
    if isinstance(exc, connection_errors):
        return ConnectionFailed(type(exc).__name__, str(exc) or type(exc).__name__)
    if isinstance(exc, boto.ParamValidationError):
        return ClientFault("ParamValidationError", str(exc))
    return ClientFault(type(exc).__name__, str(exc) or type(exc).__name__)
