"""Every error connect-bulk raises, in one tree; "should we retry" is a type question.

::

    ConnectBulkError
    ├── UsageError            bad options or a refused run (exit 2); nothing was called
    │   ├── InputError        an input file that cannot be read or lacks a column (exit 2)
    │   └── DamagedRun        a file of the run directory too damaged to continue (exit 2)
    ├── StorageError          the run's files cannot be written mid-run: disk full, read-only
    │                         (exit 3, aborted; resume continues once the cause is fixed)
    ├── PublishError          the run ended but --publish could not upload its files
    │                         (exit 3; resume publishes them again once the cause is fixed)
    ├── RunLocked             another process holds the run directory (exit 75)
    ├── Abandoned             a call not retried because the run is stopping; items stay pending
    └── CallError             one AWS call failed, classified by ``classify``
        ├── TransientError    marker: worth another attempt
        │   ├── Throttled         429 / ThrottlingException and friends
        │   ├── ServerError       5xx
        │   └── ConnectionFailed  no answer: refused, dropped, timed out
        └── TerminalError     marker: another attempt gives the same answer
            ├── ClientFault       4xx: the request itself is wrong for this item
            │   └── AccessDenied  refused for lack of permission (a storm of these stops a run)
            └── FatalError        credentials, or an endpoint that answers nothing
                                  (``unreachable``): no call of the run can succeed

``classify.classify`` maps every botocore/aiohttp exception to the most specific of these, in
one place, at the AWS layer; the engine never looks at a botocore exception itself, and an
exception that is none of AWS's is a bug, not an item's failure.
"""

from __future__ import annotations

from .redact import redact


class ConnectBulkError(Exception):
    """Root of connect-bulk's errors."""

    exit_code = 1


class UsageError(ConnectBulkError):
    exit_code = 2


def aws_setup_refused(exc: Exception, profile: str | None) -> UsageError:
    """botocore's ``ProfileNotFound`` or ``ConfigParseError`` (the AWS config or credentials
    file), as the usage error it is: exit 2, one line naming the profile or the file."""
    from botocore.exceptions import ProfileNotFound

    if isinstance(exc, ProfileNotFound):
        if profile is None:  # AWS_PROFILE's
            return UsageError(f"AWS profile {exc.kwargs.get('profile')!r} (AWS_PROFILE) not "
                              "found")
        return UsageError(f"AWS profile {profile!r} not found")
    return UsageError(f"{exc}: fix it, or point AWS_CONFIG_FILE or AWS_SHARED_CREDENTIALS_FILE "
                      "to a file that parses")


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


class PublishError(ConnectBulkError):
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


class AccessDenied(ClientFault):
    """Refused for lack of permission, whatever the item: many in a row mean the credentials,
    not the items, are wrong."""


class FatalError(TerminalError):
    pass


UNREACHABLE_S = 10.0


def unreachable(error: CallError, *, silent_s: float | None, ever: bool) -> CallError:
    """A call whose attempts are spent, each without an answer (``ConnectionFailed``), while
    no other call got one either for the ``silent_s`` seconds since its first attempt (None:
    one did), ``UNREACHABLE_S`` or more, or none of the run ``ever`` did: the network or the
    endpoint is down, and no item is at fault. A ``FatalError``: the run stops, its items
    pending for resume, instead of failing every item one backoff at a time. Otherwise
    ``error`` itself."""
    if not isinstance(error, ConnectionFailed) or silent_s is None or (
            ever and silent_s < UNREACHABLE_S):
        return error
    silent = f"for {silent_s:.0f} s" if ever else "of this run"
    fatal = FatalError(error.code, f"no answer from AWS to any call {silent} ({error.message}); "
                       "check the network and --endpoint-url, then resume")
    fatal.attempts = error.attempts
    return fatal
