"""The command service: validates commands against current state and appends their events.

It is a nats-py `micro` service, so `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS` answer for it.
Each (role, verb) is an endpoint on `dante.cmd.<role>.*.<verb>` in the queue group `dante`,
so several instances share the load. The identity is the subject's third token: nats-server
permissions on subjects decide who may act as whom, never the body.

For each command: decode (or reply `malformed`); bring the aggregates it decides against up
to date; decide; append atomically with the versions it decided on; on a conflict re-read
and decide again. A rejection is re-checked against freshly read state before it is sent,
so a stale cache can delay but never wrongly refuse. Nothing is appended on a rejection.

Commands on the same aggregate are serialised within an instance (one lock per aggregate);
different aggregates proceed concurrently.

Before any of that, each request is admitted or refused from its subject alone
(`dante.services.admission`): per-account token buckets, a stricter one for the commands
that append to the log, and per-account queues served round-robin, so one account's flood
is refused `rate_limited` at almost no cost while every other account is served as before.
The endpoints' callbacks never wait: no backlog forms in the client library either.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

import msgspec
import structlog
from nats.micro import add_service
from nats.micro.service import EndpointConfig, Service, ServiceConfig

from dante import __version__
from dante.domain.deciders import DECIDERS, READ_FRESH, Context
from dante.domain.decision import Decision
from dante.domain.model import JobState, ProviderState, WalletState, World
from dante.domain.rejection import Rejected
from dante.domain.settings import Settings
from dante.events.errors import EventStoreError
from dante.events.subjects import EVENT_PREFIX, subject_of
from dante.handlers.executor import Executor, GaveUp
from dante.handlers.snapshot import Snapshots
from dante.schemas.codec import COMMAND_TYPES, DecodeError, decode_command, error_reply, ok_reply
from dante.schemas.commands import Command, Deposit, ErrorInfo, RegisterProvider
from dante.schemas.values import ACCOUNT_PATTERN, RESERVED_ACCOUNTS
from dante.services.admission import Admission, FairQueue
from dante.services.metrics import PlatformMetrics
from dante.services.payments import verify_deposit
from dante.services.replies import respond

if TYPE_CHECKING:
    from pathlib import Path

    from nats.aio.client import Client as NATS
    from nats.micro.request import Request

    from dante.chain import Chain
    from dante.events.store import EventStore

log = structlog.get_logger(__name__)

SERVICE_NAME: Final = "dante"
QUEUE_GROUP: Final = "dante"
_ACCOUNT = re.compile(ACCOUNT_PATTERN)


class Lookup(Protocol):
    """Current write-model state, read fresh from the log, for ownership checks."""

    async def job(self, job_id: str) -> JobState: ...

    async def provider(self, provider_id: str) -> ProviderState: ...

    async def wallet(self, wallet_id: str) -> WalletState: ...

    @property
    def world(self) -> World:
        """The service's world: providers kept current; other aggregates as last loaded."""


class Extension(Protocol):
    """Serves commands that are not decisions on the log: queries answered from the read
    models, job output, file transfers. It checks ownership itself, through `lookup`."""

    handles: frozenset[type[Command[Any]]]

    async def answer(self, role: str, identity: str, command: Command[Any], lookup: Lookup) -> Any:
        """The result for `identity`; raise `Rejected` to refuse."""


Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Failure(msgspec.Struct):
    code: str = "?"


class _Refused(msgspec.Struct):
    error: _Failure | None = None


_refused: Final = msgspec.json.Decoder(_Refused)
_OK: Final = b'{"ok":true'


def _outcome(body: bytes) -> str:
    """ "ok", or the error code of a reply (read only from a refusal's bytes)."""
    if body.startswith(_OK):
        return "ok"
    try:
        error = _refused.decode(body).error
    except msgspec.DecodeError:
        return "?"
    return error.code if error is not None else "?"


def _role_and_verb(subject: str) -> tuple[str, str]:
    """`dante.cmd.<role>.<identity>.<verb>`: its role and verb (the identity is no label:
    one series per account would grow without bound)."""
    parts = subject.split(".")
    return (parts[2], parts[-1]) if len(parts) == 5 else ("?", "?")


class CommandService:
    """Serves every command and query endpoint over one NATS connection."""

    def __init__(
        self,
        nc: NATS,
        store: EventStore,
        *,
        settings: Settings | None = None,
        extensions: list[Extension] | None = None,
        clock: Clock = utcnow,
        chain: Chain | None = None,
        concurrency: int = 256,
        command_timeout: float = 15.0,
        reply_cache: int = 50_000,
        snapshot: Path | None = None,
        metrics: PlatformMetrics | None = None,
    ) -> None:
        """`snapshot`: the handlers' world snapshot (`dante.handlers.snapshot`), whose
        providers give the market at start without reading every provider event."""
        self._nc = nc
        self._store = store
        self._settings = settings or Settings()
        self._extensions: dict[type[Command[Any]], Extension] = {
            kind: ext for ext in extensions or [] for kind in ext.handles
        }
        self._clock = clock
        self._chain = chain
        self._timeout = command_timeout
        self.world = World(remember_causes=8)
        self._executor = Executor(store, lambda: self.world, name="commands")
        self._loaded: set[tuple[str, str]] = set()
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._replies: OrderedDict[tuple[str, str, str], bytes] = OrderedDict()
        self._reply_cache = reply_cache
        self.admission = Admission(self._settings, machines=self.world.machines)
        self._queue: FairQueue[Request] = FairQueue(self._serve, concurrency=concurrency)
        self._service: Service | None = None
        self._tail: asyncio.Task[None] | None = None
        self._snapshot = None if snapshot is None else Snapshots(snapshot, store)
        #: Providers taken from the snapshot, not yet folded from their own events.
        self._unfolded: set[str] = set()
        self._metrics = metrics

    # ── lifecycle ───────────────────────────────────────────────────────────────────────

    async def start(self) -> None:
        """Follow the providers (the market), then open the endpoints."""
        market = f"{EVENT_PREFIX}.provider.>"
        after = 0
        found = None if self._snapshot is None else await self._snapshot.load_providers()
        if found is not None:
            after, providers = found
            for provider in providers:
                self.world.providers[provider.provider_id] = provider
                self.world.market.touch(provider.provider_id)
                self.world.index_machine(provider)
            self.world.position = after
            self._unfolded = {provider.provider_id for provider in providers}
        async for recorded in self._store.scan(market, after + 1):
            self.world.apply(recorded)
        start = self.world.position + 1
        self._tail = asyncio.create_task(self._follow(market, start), name="cmd-market")
        self._service = await add_service(
            self._nc,
            config=ServiceConfig(
                name=SERVICE_NAME,
                version=__version__,
                description="Dante commands and queries",
                queue_group=QUEUE_GROUP,
            ),
        )
        for role, verb in sorted(COMMAND_TYPES):
            await self._service.add_endpoint(
                EndpointConfig(
                    name=f"{role}-{verb}",
                    subject=f"dante.cmd.{role}.*.{verb}",
                    handler=self._on_request,
                    metadata={"role": role, "verb": verb},
                )
            )
        # Ready means answering: the server has the endpoints' subscriptions once a flush
        # came back (a request from another connection before that finds no responders).
        await self._nc.flush()
        log.info("commands.ready", endpoints=len(COMMAND_TYPES))

    async def stop(self) -> None:
        if self._service is not None:
            await self._service.stop()
            self._service = None
        await self._queue.drain(self._timeout)
        if self._tail is not None:
            self._tail.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tail
            self._tail = None

    async def _follow(self, subjects: str, start: int) -> None:
        async for recorded in self._store.read(start, follow=True, subjects=subjects):
            self.world.apply(recorded)

    # ── requests ────────────────────────────────────────────────────────────────────────

    async def _on_request(self, request: Request) -> None:
        # micro awaits handlers one at a time per endpoint: this never waits for the work,
        # it admits the request into its account's queue (which runs it) or refuses it.
        parts = request.subject.split(".")
        if len(parts) != 5:
            self._queue.offer("", request)  # answered `malformed` by _process
            return
        _, _, role, account, verb = parts
        kind = COMMAND_TYPES.get((role, verb))
        # The operator's commands are the platform's own: never limited.
        wait = (
            None if role == "operator" else self.admission.admit(account, writes=kind in DECIDERS)
        )
        if wait is None and self._queue.offer(account, request):
            return
        if wait is None:
            wait = self.admission.retry_after()
        await self._refuse(request, account, wait)

    async def _refuse(self, request: Request, account: str, wait: float) -> None:
        retry_ms = max(1, round(wait * 1000))
        refused = self.admission.refusal(account)
        if refused is not None:
            log.warning("commands.rate_limited", account=account, refused=refused)
        body = self._error(
            ErrorInfo(
                code="rate_limited",
                message=f"rate limited: {account} sends more requests than the platform admits "
                f"from one account; retry in {retry_ms} ms",
                retry_after_ms=retry_ms,
            )
        )
        with contextlib.suppress(Exception):
            await respond(self._nc, request, body)

    async def _serve(self, request: Request) -> None:
        began = time.perf_counter()
        try:
            body = await asyncio.wait_for(
                self._process(request.subject, request.data), self._timeout
            )
        except TimeoutError:
            body = self._error(ErrorInfo(code="unavailable", message="the platform is busy; retry"))
        except EventStoreError as exc:  # reading what it decides on, past the log's retries
            log.warning("commands.log_unavailable", subject=request.subject, error=str(exc))
            body = self._error(ErrorInfo(code="unavailable", message="the log is unavailable"))
        except Exception:
            log.exception("commands.crash", subject=request.subject)
            body = self._error(ErrorInfo(code="internal", message="internal error; retry later"))
        with contextlib.suppress(Exception):
            await respond(self._nc, request, body)
        if self._metrics is not None:
            role, verb = _role_and_verb(request.subject)
            self._metrics.observe_command(role, verb, _outcome(body), time.perf_counter() - began)

    def _error(self, info: ErrorInfo) -> bytes:
        return error_reply(info)

    @staticmethod
    def _parse(subject: str, data: bytes) -> tuple[str, str, Command[Any]]:
        """Role, identity and command of a request; `Rejected` when it is not one."""
        parts = subject.split(".")
        if len(parts) != 5:
            raise Rejected("malformed", f"bad subject {subject}")
        _, _, role, identity, verb = parts
        if role != "operator" and (not _ACCOUNT.match(identity) or identity in RESERVED_ACCOUNTS):
            raise Rejected("forbidden", f"{identity!r} is not a valid account name")
        try:
            return role, identity, decode_command(role, verb, data)
        except DecodeError as exc:
            raise Rejected("malformed", exc.reason, exc.field) from None

    async def _process(self, subject: str, data: bytes) -> bytes:
        try:
            role, identity, command = self._parse(subject, data)
        except Rejected as rejected:
            return self._error(rejected.info)
        extension = self._extensions.get(type(command))
        if extension is not None:
            return await self._extend(extension, role, identity, command)
        if type(command) not in DECIDERS:
            message = f"{command.VERB} is not served by this instance"
            return self._error(ErrorInfo(code="unavailable", message=message))
        key = (role, identity, command.command_id)
        cached = self._replies.get(key)
        if cached is not None:
            return cached
        payment = None
        if isinstance(command, Deposit):
            try:
                payment = await verify_deposit(self._chain, command)
            except Rejected as rejected:
                return self._error(rejected.info)
        ctx = Context(
            role=role,
            identity=identity,
            command_id=command.command_id,
            now=self._clock(),
            settings=self._settings,
            payment=payment,
        )
        decider, reads = DECIDERS[type(command)]
        keys = reads(ctx, command)
        # Registrations of one account's machines one at a time: its machine limit holds.
        extra = [("account", identity)] if isinstance(command, RegisterProvider) else []
        async with self._locked(keys + extra):
            body = await self._decide_and_append(ctx, command, decider, keys)
        self._remember(key, body)
        return body

    async def _extend(
        self, extension: Extension, role: str, identity: str, command: Command[Any]
    ) -> bytes:
        try:
            result = await extension.answer(role, identity, command, self)
        except Rejected as rejected:
            return self._error(rejected.info)
        return ok_reply(result)

    # ── Lookup, for extensions ──────────────────────────────────────────────────────────

    async def job(self, job_id: str) -> JobState:
        await self._load([("job", job_id)], only_missing=False)
        return self.world.job(job_id)

    async def provider(self, provider_id: str) -> ProviderState:
        await self._load([("provider", provider_id)], only_missing=False)
        return self.world.provider(provider_id)

    async def wallet(self, wallet_id: str) -> WalletState:
        await self._load([("wallet", wallet_id)], only_missing=False)
        return self.world.wallet(wallet_id)

    async def _decide_and_append(
        self,
        ctx: Context,
        command: Command[Any],
        decider: Callable[[World, Context, Any], Decision],
        keys: list[tuple[str, str]],
    ) -> bytes:
        await self._load(keys, only_missing=True)
        fresh_kinds = READ_FRESH.get(type(command))
        if fresh_kinds:
            await self._load([k for k in keys if k[0] in fresh_kinds], only_missing=False)

        def decide() -> list[Decision]:
            if any(self.world.saw_cause(a, i, ctx.cause) for a, i in keys):
                return [self._repeat(ctx, command, decider)]
            return [decider(self.world, ctx, command)]

        async def reload() -> None:
            await self._load(keys, only_missing=False)

        for fresh in (False, True):
            try:
                (landed,) = await self._executor.run(decide, on_conflict=reload)
            except Rejected as rejected:
                if fresh:
                    log.info("command.rejected", cause=ctx.cause, code=rejected.code)
                    return self._error(rejected.info)
                # Decided on what this process had loaded: read the aggregates again first.
                await reload()
                continue
            except GaveUp:
                break
            except EventStoreError as exc:
                log.warning("command.append_failed", cause=ctx.cause, error=str(exc))
                return self._error(ErrorInfo(code="unavailable", message="the log is unavailable"))
            result = landed.decision.result(self.world)
            return ok_reply(result, list(landed.seqs)) if landed.seqs else ok_reply(result)
        return self._error(
            ErrorInfo(code="conflict", message="too many concurrent changes; retry the command")
        )

    def _repeat(
        self,
        ctx: Context,
        command: Command[Any],
        decider: Callable[[World, Context, Any], Decision],
    ) -> Decision:
        """A retry of a command whose events already landed: answer again, append nothing.

        The answer is rebuilt from the current state by the decider's result; its events are
        not appended again.
        """
        try:
            decision = decider(self.world, ctx, command)
        except Rejected:
            return Decision.nothing()
        return Decision.nothing(result=decision.result)

    async def _load(self, keys: list[tuple[str, str]], *, only_missing: bool) -> None:
        for aggregate, aggregate_id in keys:
            if only_missing and (aggregate, aggregate_id) in self._loaded:
                continue
            if aggregate == "provider" and aggregate_id in self._unfolded:
                await self._fold_provider(aggregate_id)
            await self._store.catch_up(self.world, subject_of(aggregate, aggregate_id))
            self._loaded.add((aggregate, aggregate_id))

    async def _fold_provider(self, provider_id: str) -> None:
        """Fold a provider taken from the snapshot from its own events, as the scan at start
        would have: its state is the same, and the causes of its last events are known, so
        a command retried after its events landed is recognised."""
        subject = subject_of("provider", provider_id)
        fresh = World(remember_causes=8)
        while True:
            await self._store.catch_up(fresh, subject)
            mine, current = fresh.provider(provider_id), self.world.providers.get(provider_id)
            # The market's follower may have applied newer events meanwhile: read those too.
            if current is None or mine.version >= current.version:
                break
        self.world.providers[provider_id] = mine
        self.world.market.touch(provider_id)
        causes = fresh.causes.get(("provider", provider_id))
        if causes is not None:
            self.world.causes[("provider", provider_id)] = causes
        self._unfolded.discard(provider_id)

    def _remember(self, key: tuple[str, str, str], body: bytes) -> None:
        self._replies[key] = body
        if len(self._replies) > self._reply_cache:
            self._replies.popitem(last=False)

    @contextlib.asynccontextmanager
    async def _locked(self, keys: list[tuple[str, str]]) -> AsyncIterator[None]:
        # Sorted, so two commands touching the same aggregates never wait on each other
        # in opposite orders.
        locks = [self._locks.setdefault(k, asyncio.Lock()) for k in sorted(set(keys))]
        async with contextlib.AsyncExitStack() as stack:
            for lock in locks:
                await stack.enter_async_context(lock)
            yield
