"""The sandbox server: moto's ``ThreadedMotoServer`` with the Connect and Outbound Campaigns
operations of this package added, behind a thin WSGI layer that injects faults, counts calls
and serves the ``/_sandbox/*`` control endpoints. It serves through waitress rather than
werkzeug's development server, which closes every connection: AWS endpoints keep connections
alive (HTTP/1.1), and so does the sandbox, so that a client pays what it pays against AWS.

Request path::

    client ──► SandboxApp ──► /_sandbox/*           (stats, faults, reset, seed)
                  │
                  ├─ identify operation, account, region
                  ├─ latency, quota (429), drop (no answer), error (500)
                  ▼
               moto's DomainDispatcherApplication ──► moto's and our responses classes
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import parse_qs

import botocore.session
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

from . import campaigns, connect_responses
from .faults import FaultInjector, Faults
from .seed import SeedRequest, seed_world

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


# Signing name (from the SigV4 credential scope) -> botocore service models to route by.
ROUTED_SERVICES = {
    "connect": ("connect",),
    "connect-campaigns": ("connectcampaignsv2", "connectcampaigns"),
    "kms": ("kms",),
    "s3": ("s3",),  # where --publish uploads a run's files
    "sts": ("sts",),
}

_installed = False
_install_lock = threading.Lock()


def install() -> None:
    """Register the added operations with moto's URL maps (the one hook into moto).

    moto builds a Flask app per service from ``moto.<service>.urls.url_paths`` the first time a
    request for that service arrives, so the paths must be in place before the first request.
    """
    global _installed
    with _install_lock:
        if _installed:
            return
        import moto.connect.urls as connect_urls
        import moto.connectcampaigns.urls as campaigns_urls

        connect_urls.url_paths.update(connect_responses.URL_PATHS)
        campaigns_urls.url_paths.update(campaigns.URL_PATHS)
        _installed = True


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    operation: str
    service: str
    protocol: str


@cache
def _routes(signing_name: str) -> tuple[Route, ...]:
    session = botocore.session.get_session()
    routes = []
    for service in ROUTED_SERVICES.get(signing_name, ()):
        model = session.get_service_model(service)
        if not model.protocol.startswith("rest"):
            continue  # json and query protocols name the operation in a header or the body
        for name in model.operation_names:
            http = model.operation_model(name).http
            uri = http.get("requestUri", "/").split("?", 1)[0]
            regex = re.sub(r"\\\{(\w+)\\\+\\\}", r"(?P<\1>.+)", re.escape(uri))
            regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", regex)
            routes.append(
                Route(http.get("method", "POST"), re.compile(f"^{regex}/?$"), name, service,
                      model.protocol)
            )
    # Literal paths first: /phone-number/claim before /phone-number/{PhoneNumberId}.
    routes.sort(key=lambda r: -len(re.sub(r"\(\?P<\w+>[^)]*\)", "", r.pattern.pattern)))
    return tuple(routes)


@cache
def _server_error(service: str, operation: str) -> str:
    """The operation's own 5xx error code, as the model lists it (InternalServiceException…)."""
    model = botocore.session.get_session().get_service_model(service)
    for shape in model.operation_model(operation).error_shapes:
        if shape.metadata.get("fault") or shape.metadata.get("error", {}).get(
            "httpStatusCode", 0
        ) >= 500:
            return str(shape.name)
    return "InternalFailure"


@dataclass(frozen=True, slots=True)
class CallInfo:
    operation: str
    service: str | None
    protocol: str
    account: str
    region: str


_SCOPE = re.compile(r"Credential=([^/,\s]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")


def identify(environ: dict[str, Any]) -> CallInfo:
    """Which operation a request calls, and for which account and region."""
    scope = _SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    access_key, region, signing = scope.groups() if scope else ("", "us-east-1", "")
    method = environ.get("REQUEST_METHOD", "GET")
    path = environ.get("PATH_INFO", "/")
    target = environ.get("HTTP_X_AMZ_TARGET")
    operation, service, protocol = "Unknown", None, "json"
    if target:
        operation = target.rsplit(".", 1)[-1]
        service = ROUTED_SERVICES.get(signing, (None,))[0]
    else:
        for route in _routes(signing):
            if route.method == method and route.pattern.match(path):
                operation, service, protocol = route.operation, route.service, route.protocol
                break
        else:
            action = _query_action(environ)
            if action:
                operation = action
                service = ROUTED_SERVICES.get(signing, (None,))[0]
                protocol = "query"
    return CallInfo(operation, service, protocol, _account(environ, access_key), region)


def _query_action(environ: dict[str, Any]) -> str | None:
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if "Action" in query:
        return str(query["Action"][0])
    if not environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        return None
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length else b""
    # Put the body back for moto, which reads it again.
    environ["wsgi.input"] = io.BytesIO(body)
    action = parse_qs(body.decode("utf-8", "replace")).get("Action")
    return str(action[0]) if action else None


def _account(environ: dict[str, Any], access_key: str) -> str:
    # The same order moto uses (BaseResponse.get_current_account).
    if "MOTO_ACCOUNT_ID" in os.environ:
        return os.environ["MOTO_ACCOUNT_ID"]
    if environ.get("HTTP_X_MOTO_ACCOUNT_ID"):
        return str(environ["HTTP_X_MOTO_ACCOUNT_ID"])
    from moto.iam.models import get_account_id_from

    return str(get_account_id_from(access_key or "AKIAEXAMPLE"))


def _json_response(
    start_response: StartResponse, status: int, body: Any, headers: dict[str, str] | None = None
) -> list[bytes]:
    data = json.dumps(body).encode()
    reason = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
              429: "Too Many Requests",
              500: "Internal Server Error"}.get(status, "Error")
    start_response(
        f"{status} {reason}",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            *(headers or {}).items(),
        ],
    )
    return [data]


def _aws_error(start_response: StartResponse, call: CallInfo, status: int, code: str,
               message: str) -> list[bytes]:
    if call.protocol == "query":
        data = (
            "<ErrorResponse><Error><Type>"
            + ("Receiver" if status >= 500 else "Sender")
            + f"</Type><Code>{code}</Code><Message>{message}</Message></Error>"
            "<RequestId>sandbox</RequestId></ErrorResponse>"
        ).encode()
        start_response(f"{status} Error", [("Content-Type", "text/xml"),
                                           ("Content-Length", str(len(data)))])
        return [data]
    return _json_response(
        start_response, status, {"__type": code, "message": message},
        {"x-amzn-ErrorType": code},
    )


class SandboxApp:
    """The WSGI layer in front of moto's dispatcher."""

    def __init__(self, moto_app: WSGIApp, injector: FaultInjector, *,
                 onboarding_seconds: float) -> None:
        self.moto_app = moto_app
        self.injector = injector
        self._onboarding_seconds = onboarding_seconds
        campaigns.ONBOARDING.set(onboarding_seconds)
        self._sleep = threading.Event().wait

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_sandbox/"):
            return self.control(path, environ, start_response)
        call = identify(environ)
        delay = self.injector.delay_s()
        if delay:
            self._sleep(delay)
        verdict = self.injector.decide(call.operation, call.account, call.region)
        if verdict == "throttle":
            code = "Throttling" if call.protocol == "query" else "ThrottlingException"
            return _aws_error(start_response, call, 429, code, "Rate exceeded")
        if verdict == "deny":
            action = f"{call.service or 'aws'}:{call.operation}"
            return _aws_error(start_response, call, 403, "AccessDeniedException",
                              f"User: arn:aws:iam::{call.account}:user/sandbox is not "
                              f"authorized to perform: {action}")
        if verdict == "drop":
            return self._drop(environ, start_response)
        if verdict == "error":
            code = (
                _server_error(call.service, call.operation) if call.service else "InternalFailure"
            )
            return _aws_error(start_response, call, 500, code,
                              "The sandbox injected a server error (--error-rate)")
        return self.moto_app(environ, start_response)

    @staticmethod
    def _drop(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        """Close the connection without the answer, as a lost response looks to a client: the
        headers promise a body that never comes, and the server closes the connection (a WSGI
        server must, when an application returns fewer bytes than its Content-Length)."""
        start_response("500 Dropped", [("Content-Length", "64")])
        return []

    def control(self, path: str, environ: dict[str, Any],
                start_response: StartResponse) -> list[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        try:
            body = self._body(environ) if method == "POST" else {}
            if path == "/_sandbox/stats" and method == "GET":
                return _json_response(start_response, 200, self.injector.stats())
            if path == "/_sandbox/faults":
                if method == "POST":
                    body = dict(body)
                    onboarding = body.pop("onboarding_seconds", None)
                    if onboarding is not None:
                        campaigns.ONBOARDING.set(float(onboarding))
                    self.injector.configure(body)
                return _json_response(start_response, 200, self._faults_json())
            if path == "/_sandbox/reset" and method == "POST":
                self.reset()
                return _json_response(start_response, 200, {"reset": True})
            if path == "/_sandbox/seed" and method == "POST":
                return _json_response(start_response, 200, seed_world(SeedRequest.from_json(body)))
            if path == "/_sandbox/expire-onboarding-jobs" and method == "POST":
                from moto.core import DEFAULT_ACCOUNT_ID

                backend = campaigns.campaigns_sandbox_backends[
                    body.get("account_id", DEFAULT_ACCOUNT_ID)][body.get("region", "us-east-1")]
                return _json_response(start_response, 200,
                                      {"expired": backend.expire_succeeded_jobs()})
            if path == "/_sandbox/health":
                return _json_response(start_response, 200, {"ok": True})
        except (ValueError, TypeError) as exc:
            return _json_response(start_response, 400, {"error": str(exc)})
        return _json_response(start_response, 404, {"error": f"no {method} {path}"})

    def _faults_json(self) -> dict[str, Any]:
        return self.injector.faults.to_json() | {
            "onboarding_seconds": campaigns.ONBOARDING.seconds
        }

    def reset(self) -> None:
        from moto.core.base_backend import BackendDict

        BackendDict.reset()
        self.injector.reset()
        campaigns.ONBOARDING.set(self._onboarding_seconds)

    @staticmethod
    def _body(environ: dict[str, Any]) -> dict[str, Any]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        if not raw.strip():
            return {}
        body = json.loads(raw)
        if not isinstance(body, dict):
            raise ValueError("the request body must be a JSON object")
        return body


class SandboxServer(ThreadedMotoServer):
    """moto's ``ThreadedMotoServer`` with ``SandboxApp`` in front of its dispatcher."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Faults | None = None,
        onboarding_seconds: float = 2.0,
    ) -> None:
        super().__init__(ip_address=host, port=port, verbose=False)
        self._waitress: Any = None
        self._channels: dict[int, Any] = {}  # the server's socket map: listener, connections
        self.injector = FaultInjector(faults or Faults())
        self.onboarding_seconds = onboarding_seconds
        self._failure: BaseException | None = None

    #: worker threads: two runs at --concurrency 16 each, with room for the control endpoints
    THREADS = 48

    def start(self) -> None:
        """Start serving; raises OSError when the address cannot be bound."""
        super().start()
        if self._failure is not None:
            raise OSError(f"the sandbox did not start: {self._failure}") from self._failure

    def _server_entry(self) -> None:
        # Overrides moto's: moto's app, with our layer wrapped around it, served by waitress.
        from waitress.server import create_server

        try:
            install()
            app = SandboxApp(
                DomainDispatcherApplication(create_backend_app),
                self.injector,
                onboarding_seconds=self.onboarding_seconds,
            )
            # A dropped call (``_drop``) and a queue of calls held by --latency-ms are the
            # sandbox doing its job, not something to warn about on stderr.
            logging.getLogger("waitress").setLevel(logging.ERROR)
            self._waitress = create_server(
                app, map=self._channels, host=self._ip_address, port=self._port,
                threads=self.THREADS, ident="connect-bulk-sandbox", channel_timeout=300,
            )
        except BaseException as exc:
            # moto's start() waits for this event; never leave it waiting.
            self._failure = exc
            self._server_ready_event.set()
            return
        self._server_ready_event.set()
        self._waitress.run()

    def get_host_and_port(self) -> tuple[str, int]:
        assert self._waitress is not None, "start() first"
        return str(self._waitress.effective_host), int(self._waitress.effective_port)

    @property
    def url(self) -> str:
        host, port = self.get_host_and_port()
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}"

    def stop(self) -> None:
        server = self._waitress
        if self._failure is not None or server is None or self._thread is None:
            return
        from waitress import wasyncore

        # Close the listener and every connection in the server's own loop (its trigger runs
        # the thunk there); the loop ends when nothing is left open, then the workers stop.
        try:
            server.trigger.pull_trigger(lambda: wasyncore.close_all(self._channels))
        except OSError:
            # The trigger's pipe is closed, so its loop can no longer be woken: close what is
            # left from here (the loop, if it still runs, ends on its next pass).
            wasyncore.close_all(self._channels, ignore_all=True)
        self._thread.join(timeout=30)
        server.task_dispatcher.shutdown()

    def __enter__(self) -> SandboxServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
