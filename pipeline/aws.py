"""The AWS side of the engine: one aioboto3 client per (service, region), the rate limiters,
the retries, and the per-operation call counters.

Jobs make every call through ``Caller.call``: it waits for the limiter of (operation, account,
region), holds one of the ``concurrency`` slots while the request is in flight, classifies what
went wrong (``classify``, below: the one place botocore's and aiohttp's errors are mapped to
connect-bulk's), and retries what is worth retrying with full-jitter backoff. The SDK's own
retries are off, so every attempt is counted and rate-limited here.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import anyio

from .classify import classify
from .crashpoints import crashpoint
from .errors import Abandoned, CallError, ConnectionFailed, Throttled, UsageError, unreachable
from .job import answer_slot_to_take
from .learned import Key, LearnedRates
from .limits import AdaptiveRate, Backoff
from .peers import Peers
from .redact import remember


@dataclass(slots=True)
class OperationStats:
    made: int = 0
    throttled: int = 0
    retried: int = 0
    errors: int = 0
    #: answers a look-up expects (a 404 that means "nothing there"), not errors
    not_found: int = 0


@dataclass(frozen=True, slots=True)
class Answer:
    data: dict[str, Any]
    attempts: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AwsSettings:
    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None
    rate: float = 2.0
    burst: float = 5.0
    adaptive: bool = True
    concurrency: int = 16
    max_attempts: int = 8
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    #: role to assume for instances in other accounts than the caller's ("{account}" filled in)
    role_arn_template: str | None = None
    #: where learned rates are kept across runs (``learned``); None: the user's cache
    state_dir: str | None = None
    #: ``s3://bucket/prefix`` the final files are uploaded to when an execution ends
    publish: str | None = None


def _method(operation: str) -> str:
    from botocore import xform_name

    return str(xform_name(operation))


def _jobs_quota(key: Key) -> bool:
    """Whether a limiter's quota is one the jobs spend: not that of the caller's own STS calls
    (its account, the roles it assumes: once a run each), neither shared nor learned."""
    return key[1] != "caller"


class Caller:
    """Rate-limited, retried, counted AWS calls. Use as an async context manager."""

    def __init__(self, settings: AwsSettings, *, backoff: Backoff | None = None,
                 stats: dict[str, OperationStats] | None = None,
                 on_retry: Callable[[str, CallError, float], None] | None = None,
                 on_learned: Callable[[Key, float], None] | None = None,
                 ) -> None:
        self.settings = settings
        self.backoff = backoff or Backoff()
        self.stats: dict[str, OperationStats] = defaultdict(OperationStats, stats or {})
        self._limiters: dict[Key, AdaptiveRate] = {}
        self._learned = LearnedRates(settings.state_dir, settings.endpoint_url)
        #: the runs of this host that spend the same quotas (``share_quotas``)
        self._peers = Peers(settings.state_dir, settings.endpoint_url) \
            if settings.adaptive else None
        self._runs_told: dict[Key, int] = {}  # what ``share_quotas`` said
        # fast_acquire: a free slot is taken without a trip through the event loop (the
        # stop is looked at right after, in ``_wait_turn``).
        self._slots = anyio.Semaphore(settings.concurrency, fast_acquire=True)
        self._clients: dict[tuple[str, str, str], Any] = {}
        self._sessions: dict[str, Any] = {}
        self._accounts: dict[str, str] = {}
        self._answers = 0  # attempts that got an answer, any answer: the endpoint is there
        self._stack = contextlib.AsyncExitStack()
        self._client_lock = anyio.Lock()
        self._session: Any = None
        #: set when the run stops: no attempt starts any more, not even one that already
        #: waits for its limiter or a slot
        self.stopping = False
        self._waiting: set[anyio.CancelScope] = set()
        #: told of each failed attempt that will be tried again: (operation, error, delay)
        self.on_retry = on_retry
        #: told of each limiter that starts from a rate an earlier run learned: (key, rate)
        self.on_learned = on_learned

    async def __aenter__(self) -> Caller:
        from .answers import open_session

        self._session, self._user_agent = open_session(self.settings.profile)
        await self._remember_credentials(self._session)
        return self

    @staticmethod
    async def _remember_credentials(session: Any) -> None:
        """The credentials' values are masked in every message (``redact``)."""
        from botocore.exceptions import BotoCoreError

        try:
            credentials = await session.get_credentials()
            if credentials is not None:
                frozen = await credentials.get_frozen_credentials()
                remember(frozen.access_key, frozen.secret_key, frozen.token)
        except BotoCoreError:
            pass  # no credentials yet: the first call says so, as a FatalError

    async def __aexit__(self, *exc: object) -> None:
        if self._peers is not None:
            with contextlib.suppress(OSError):
                self._peers.leave()
        await self._stack.aclose()

    @property
    def default_region(self) -> str:
        region = self.settings.region or (self._session and self._session.region_name)
        if not region:
            raise UsageError(
                "no AWS region: give --region, set AWS_REGION, or use instance ARNs"
            )
        return str(region)

    async def _session_for(self, account: str, region: str) -> Any:
        """The session whose credentials act in ``account``: the caller's own, or, with
        ``--role-arn-template``, the role assumed there (once per account; botocore refreshes
        it before it expires)."""
        template = self.settings.role_arn_template
        if not template or account == "caller" or account == await self.account(region):
            return self._session
        if account not in self._sessions:
            import aioboto3
            from aiobotocore.credentials import AioDeferredRefreshableCredentials
            from botocore.credentials import CredentialProvider

            from .answers import botocore_session

            role_arn = template.format(account=account)

            async def assume() -> dict[str, str]:
                # Runs inside the call that needs the credentials, which holds a slot already.
                answer = await self.call("sts", "AssumeRole", region=region, account="caller",
                                         hold_slot=False, RoleArn=role_arn,
                                         RoleSessionName="connect-bulk")
                credentials = answer.data["Credentials"]
                remember(credentials["AccessKeyId"], credentials["SecretAccessKey"],
                         credentials["SessionToken"])
                return {
                    "access_key": credentials["AccessKeyId"],
                    "secret_key": credentials["SecretAccessKey"],
                    "token": credentials["SessionToken"],
                    "expiry_time": credentials["Expiration"].isoformat(),
                }

            class AssumedRole(CredentialProvider):  # type: ignore[misc]
                """The role of ``--role-arn-template`` in one account, first in the chain
                (the credential resolver's public insertion point; aiobotocore's resolver
                awaits ``load``, as its own providers do)."""

                METHOD = "connect-bulk-assume-role"

                async def load(self) -> Any:
                    return AioDeferredRefreshableCredentials(refresh_using=assume,
                                                             method=self.METHOD)

            assumed = botocore_session()
            resolver = assumed.get_component("credential_provider")
            resolver.insert_before(resolver.providers[0].METHOD, AssumedRole())
            self._sessions[account] = aioboto3.Session(botocore_session=assumed)
        return self._sessions[account]

    async def client(self, service: str, region: str, account: str = "caller") -> Any:
        session = await self._session_for(account, region)
        key = (service, region, account if session is not self._session else "caller")
        if key not in self._clients:
            async with self._client_lock:
                if key not in self._clients:
                    from botocore.config import Config

                    # No parameter validation: every parameter is built by a job from
                    # input the plan validated; the service checks them all again, and
                    # botocore's pass over them cost 6% of a call's CPU (16 workers).
                    config = Config(
                        retries={"total_max_attempts": 1, "mode": "standard"},
                        parameter_validation=False,
                        max_pool_connections=self.settings.concurrency,
                        connect_timeout=self.settings.connect_timeout_s,
                        read_timeout=self.settings.read_timeout_s,
                        user_agent=self._user_agent,
                    )
                    self._clients[key] = await self._stack.enter_async_context(
                        session.client(
                            service, region_name=region, endpoint_url=self.settings.endpoint_url,
                            config=config,
                        )
                    )
        return self._clients[key]

    def limiter(self, operation: str, account: str, region: str) -> AdaptiveRate:
        key = (operation, account, region)
        if key not in self._limiters:
            learned = self._learned.get(key) if self.settings.adaptive else None
            limiter = self._limiters[key] = AdaptiveRate(
                self.settings.rate, self.settings.burst, adaptive=self.settings.adaptive,
                learned=learned, **self._runs_spending(key),
            )
            if _jobs_quota(key):
                self._say_spending()
            if learned is not None and self.on_learned is not None:
                self.on_learned(key, limiter.rate)
        return self._limiters[key]

    def _spending(self) -> dict[Key, float]:
        """The quotas this run spent lately (the caller's own look-up aside), at what rate."""
        return {key: limiter.rate for key, limiter in self._limiters.items()
                if _jobs_quota(key) and limiter.answered_within(Peers.LIVE_S)}

    def _runs_spending(self, key: Key) -> dict[str, Any]:
        """How many runs of this host spend the quota of ``key``, this one among them, and
        the others' rates, as its limiter starts (a folder read, once per quota)."""
        if self._peers is None or not _jobs_quota(key):
            return {}
        runs, others = self._peers.count([key])[key]
        return {"runs": runs, "others": others}

    def _say_spending(self) -> None:
        """A limiter started: the other runs know of it at once, with the rate it starts at
        (a small file written, once per quota), not a beat later, after its first burst."""
        if self._peers is not None:
            with contextlib.suppress(OSError):  # said by the next ``share_quotas``
                self._peers.say(self._spending())

    @property
    def shares_quotas(self) -> bool:
        """Whether this run shares its quotas with the runs of its host (adaptive, and the
        state directory could be written so far)."""
        return self._peers is not None

    async def share_quotas(self) -> list[tuple[Key, int, float]]:
        """Count the runs of this host that spend each quota this run spends, and share each
        evenly with them: (quota, runs, this run's rate) for each whose runs changed. Raises
        ``OSError`` once when the state directory cannot be written, and shares nothing more."""
        if self._peers is None:
            return []
        try:
            runs = await anyio.to_thread.run_sync(self._peers.beat, self._spending())
        except OSError:
            self._peers = None
            raise
        changed = []
        for key, (count, others) in runs.items():
            limiter = self._limiters[key]
            limiter.share(count, others)
            if count != self._runs_told.get(key, 1):
                self._runs_told[key] = count
                changed.append((key, count, limiter.rate))
        return changed

    def keep_learned(self) -> None:
        """Keep what the limiters learned for the next run (raises ``OSError``)."""
        learned = {key: value for key, limiter in self._limiters.items()
                   if _jobs_quota(key) and (value := limiter.learned()) is not None}
        self._learned.save(learned)

    async def account(self, region: str) -> str:
        """The caller's account, asked of STS once per run."""
        if "caller" not in self._accounts:
            answer = await self.call("sts", "GetCallerIdentity", region=region, account="caller")
            self._accounts["caller"] = str(answer.data["Account"])
        return self._accounts["caller"]

    def stop_calls(self) -> None:
        """The run stops: calls waiting for a limiter or a slot give up now; calls in flight
        finish their attempt and are not retried."""
        self.stopping = True
        for scope in self._waiting:
            scope.cancel()

    @contextlib.contextmanager
    def _until_stopped(self) -> Iterator[None]:
        """A wait that ends early (without raising) when the run stops."""
        scope = anyio.CancelScope()
        self._waiting.add(scope)
        try:
            with scope:
                if self.stopping:
                    scope.cancel()
                yield
        finally:
            self._waiting.discard(scope)

    async def _wait_turn(self, limiter: AdaptiveRate, hold_slot: bool) -> bool:
        """Wait for the batch's ``AnswerSlot``, a token of ``limiter`` and, if ``hold_slot``, a
        slot (``True`` when taken). Raises ``Abandoned`` once the run stops, however far it got."""
        slot = False
        answer = answer_slot_to_take()
        waits = limiter.would_wait() or (hold_slot and not self._slots.value) \
            or (answer is not None and not answer.places.value)
        # With a token and a slot free, neither acquire suspends: there is no wait to stop.
        with self._until_stopped() if waits else contextlib.nullcontext():
            if answer is not None:
                await answer.take()
            await limiter.acquire()
            if hold_slot:
                await self._slots.acquire()
                slot = True
        # The last look before sending: nothing between here and the request awaits.
        if self.stopping:
            if slot:
                self._slots.release()
            raise Abandoned("not sent: the run is stopping")
        return slot

    async def call(
        self, service: str, operation: str, *, region: str, account: str,
        hold_slot: bool = True, expected: frozenset[str] = frozenset(), **params: Any,
    ) -> Answer:
        """One AWS call, retried; ``expected`` error codes are answers to the caller (a
        look-up's not-found), counted apart from errors."""
        try:
            client = await self.client(service, region, account)
        except Exception as exc:  # credentials that cannot be had: classified like a call's
            mapped = classify(exc)
            if mapped is None:
                raise
            raise mapped from exc
        method = getattr(client, _method(operation))
        limiter = self.limiter(operation, account, region)
        stats = self.stats[operation]
        attempt, answers, first = 0, 0, 0.0
        while True:
            attempt += 1
            slot = await self._wait_turn(limiter, hold_slot)
            sent_at = limiter.now()
            if attempt == 1:  # answers from here on say the endpoint is there
                answers, first = self._answers, sent_at
            crashpoint("first-call")
            stats.made += 1
            try:
                data = await method(**params)
            except Exception as exc:  # classified here, in one place; anything else is a bug
                mapped = classify(exc)
                if mapped is None:
                    raise
                error: CallError = mapped
                if not isinstance(error, ConnectionFailed):
                    self._answers += 1
            else:
                self._answers += 1
                limiter.on_success(sent_at)
                data.pop("ResponseMetadata", None)
                return Answer(data, attempt)
            finally:
                if slot:
                    self._slots.release()
            if isinstance(error, Throttled):
                stats.throttled += 1
                limiter.on_throttle(sent_at)
            elif error.code in expected:
                stats.not_found += 1
            else:
                stats.errors += 1
            error.attempts = attempt
            if not error.retryable or attempt >= self.settings.max_attempts:
                raise unreachable(error, silent_s=None if self._answers > answers else
                                  limiter.now() - first, ever=self._answers > 0)
            if self.stopping:
                raise Abandoned(f"{operation} not retried: the run is stopping") from error
            stats.retried += 1
            delay = self.backoff.delay(attempt)
            if self.on_retry is not None:
                self.on_retry(operation, error, delay)
            with self._until_stopped():
                await anyio.sleep(delay)

    def stats_json(self) -> dict[str, dict[str, int]]:
        return {op: asdict(s) for op, s in sorted(self.stats.items())}
