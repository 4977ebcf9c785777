"""The agent's connection to the platform, kept open for as long as the agent runs.

nats-py reconnects by itself while a server is away, but not through a refused login. A
restarting platform refuses for a moment: nats-server is back before the platform's
identity service, which answers the auth callout, and the login times out unanswered; that
"Authorization Violation" closes the client for good, even with `max_reconnect_attempts=-1`.
A login the callout refuses at once (a revoked token) nats-py instead tries again every
second, for ever, without a word. Either way the `Link` (closing the connection in the
second case) opens a new one with the same credential, with backoff (0.5 s doubling to 30 s,
with jitter). Everything
the agent sends goes through the link's current connection: commands through `LinkClient`,
heartbeats and instructions through `jetstream()` (the instruction consumer binds again
when the connection changes), so running jobs carry on and the reports waiting in the
journal go out on the new connection.

A refused login cannot be told from a platform that is restarting: both end as an
"Authorization Violation" (or a login nobody answered), and the auth throttle refuses a
user's logins for a while after someone else guessed wrong. So a refused reconnect is
logged as an error, with what to check, at every attempt, and tried again (soon at the
backoff's ceiling); it is never given up: jobs keep running and their reports wait in the
journal until the login works again or the provider stops the agent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar, overload

import anyio
import nats.errors
import structlog

from dante.agent.sending import Backoff
from dante.client.commands import Client
from dante.events.subjects import DEFAULT_API_PREFIX
from dante.schemas.commands import Command, Role

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.js.client import JetStreamContext

log = structlog.get_logger(__name__)

T = TypeVar("T")

#: Backoff between attempts to open a new connection.
FIRST_RETRY_S: Final = 0.5
MAX_RETRY_S: Final = 30.0
#: How often the link looks whether its connection was closed (in case no callback said so).
CHECK_S: Final = 1.0

Callback = Callable[[], Awaitable[None]]


class Opener(Protocol):
    """Opens one connection (`dante.client.connect.connect` with the agent's credential),
    passing the callbacks on to nats-py; raises `ConnectFailed` when it cannot."""

    def __call__(
        self,
        *,
        closed_cb: Callback,
        reconnected_cb: Callback,
        error_cb: Callable[[Exception], Awaitable[None]],
    ) -> Awaitable[NATS]: ...


@dataclass(frozen=True, slots=True)
class _Watched:
    """A connection, and what its callbacks said: `lost` is set once it was closed or a
    reconnect of it was refused (`refusals`)."""

    nc: NATS
    lost: anyio.Event
    refusals: list[str]


def is_refusal(error: BaseException) -> bool:
    """Whether nats-py reports a login the server refused."""
    return (
        isinstance(error, nats.errors.AuthorizationError)
        or "authorization violation" in str(error).lower()
    )


class Link:
    """The current connection to the platform, replaced whenever nats-py closes it or has
    a reconnect of it refused."""

    def __init__(
        self,
        opener: Opener | None,
        *,
        api_prefix: str = DEFAULT_API_PREFIX,
        connection: NATS | None = None,
    ) -> None:
        self._opener = opener
        #: Where this connection reaches the JetStream API (through the platform's imports
        #: when logged in as an account).
        self.api_prefix = api_prefix
        self._nc = connection
        self._watched: _Watched | None = None
        self._changed = anyio.Event()
        self._closing = False
        self._contexts: dict[str | None, JetStreamContext] = {}
        #: How many connections were opened after the first (`keep_open`'s work), and how
        #: many times nats-py reconnected one by itself.
        self.reopened = 0
        self.reconnected = 0

    @classmethod
    def fixed(cls, nc: NATS, api_prefix: str = DEFAULT_API_PREFIX) -> Link:
        """A link over a connection somebody else owns and keeps: never opened again."""
        return cls(None, api_prefix=api_prefix, connection=nc)

    # ── the connection ──────────────────────────────────────────────────────────────────

    @property
    def nc(self) -> NATS:
        if self._nc is None:
            raise RuntimeError("the link is not open yet")
        return self._nc

    @property
    def is_connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    def jetstream(self, *, prefix: str | None = None) -> JetStreamContext:
        """The current connection's JetStream context (the same object until it changes,
        so whoever bound to one can tell that the connection changed)."""
        context = self._contexts.get(prefix)
        if context is None:
            nc = self.nc
            context = nc.jetstream() if prefix is None else nc.jetstream(prefix=prefix)
            self._contexts[prefix] = context
        return context

    def client(
        self, role: Role, identity: str, *, timeout: float = 10.0, tries: int = 3
    ) -> LinkClient:
        return LinkClient(self, role, identity, timeout=timeout, tries=tries)

    async def pause(self, seconds: float) -> None:
        """Sleep `seconds`, or less: until a connection is (re)established meanwhile, so
        that whoever waits to retry tries at once."""
        with anyio.move_on_after(seconds):
            await self._changed.wait()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    # ── opening and reopening ───────────────────────────────────────────────────────────

    async def open(self) -> None:
        """Open the first connection (raises what the opener raises)."""
        self._adopt(await self._connect())

    async def _connect(self) -> _Watched:
        if self._opener is None:
            raise RuntimeError("this link cannot open connections")
        lost = anyio.Event()
        refusals: list[str] = []
        changed = self._wake

        async def on_closed() -> None:
            lost.set()

        async def on_reconnected() -> None:
            self.reconnected += 1
            changed()  # nats-py reconnected by itself: retry now

        async def on_error(error: Exception) -> None:
            # Once connected (the opener handles its own refusals): a reconnect refused.
            if is_refusal(error):
                refusals.append(str(error))
                lost.set()

        nc = await self._opener(
            closed_cb=on_closed, reconnected_cb=on_reconnected, error_cb=on_error
        )
        return _Watched(nc, lost, refusals)

    def _adopt(self, watched: _Watched) -> None:
        self._nc = watched.nc
        self._watched = watched
        self._contexts = {}
        self._wake()

    async def keep_open(self) -> None:
        """Until cancelled or `close`d: open a new connection whenever nats-py has closed
        the current one for good, or had a reconnect refused (it would try again every
        second, for ever, without a word: each try one more failed login)."""
        if self._opener is None:
            return
        while not self.closing():
            watched = self._watched
            if watched is None:
                return
            with anyio.move_on_after(CHECK_S):
                await watched.lost.wait()
            if self.closing():
                return
            if watched.refusals:
                log.error(
                    "the platform refused the agent's login when it reconnected; opening a "
                    "new connection, with backoff",
                    error=watched.refusals[0],
                )
            elif not watched.nc.is_closed:
                continue
            else:
                error = getattr(watched.nc, "last_error", None)
                log.warning(
                    "the connection to the platform was closed for good; opening a new one",
                    error=repr(error) if error is not None else None,
                )
            await _discard(watched.nc)
            await self._reopen()

    async def _reopen(self) -> None:
        from dante.client.connect import ConnectFailed, LoginRefused

        backoff = Backoff(first=FIRST_RETRY_S, ceiling=MAX_RETRY_S)
        delay = backoff.delay()
        attempts = 0
        while not self.closing():
            await anyio.sleep(delay)
            attempts += 1
            try:
                watched = await self._connect()
            except ConnectFailed as exc:
                delay = backoff.delay()
                _say_failed(
                    exc, refused=isinstance(exc, LoginRefused), attempts=attempts, delay=delay
                )
                continue
            if self.closing():
                await _discard(watched.nc)
                return
            self._adopt(watched)
            self.reopened += 1
            log.info("reconnected to the platform", attempts=attempts)
            return

    def closing(self) -> bool:
        """Whether `close` was called (asked again after every wait: it may have been)."""
        return self._closing

    async def close(self) -> None:
        """Stop reopening and close the current connection, in whatever state it is."""
        self._closing = True
        if self._watched is not None:
            self._watched.lost.set()
        if self._nc is not None and self._opener is not None:
            await _discard(self._nc)


class LinkClient(Client):
    """A `Client` that sends on the link's current connection (the one it was made with may
    have been replaced since)."""

    def __init__(
        self, link: Link, role: Role, identity: str, *, timeout: float = 10.0, tries: int = 3
    ) -> None:
        super().__init__(link.nc, role, identity, timeout=timeout, tries=tries)
        self._link = link
        self._timeout_s = timeout
        self._tries_n = tries

    @overload
    async def send(self, command: Command[Any], result: type[T]) -> T: ...

    @overload
    async def send(self, command: Command[Any], result: None = None) -> Any: ...

    async def send(self, command: Command[Any], result: type[T] | None = None) -> T | Any:
        client = Client(
            self._link.nc, self.role, self.identity, timeout=self._timeout_s, tries=self._tries_n
        )
        return await client.send(command, result)


def _say_failed(exc: Exception, *, refused: bool, attempts: int, delay: float) -> None:
    if refused:
        # Said every time: a provider must see it, whatever it turns out to be.
        log.error(
            "the platform refused the agent's login; trying again (a platform that is "
            "restarting refuses for a moment too)",
            error=str(exc),
            attempts=attempts,
            retry_in=round(delay, 1),
        )
    else:
        log.warning(
            "cannot reach the platform; trying again",
            error=str(exc),
            attempts=attempts,
            retry_in=round(delay, 1),
        )


async def _discard(nc: NATS) -> None:
    """Close a connection, in whatever state it is.

    On a connection that was lost and is being re-established, nats-py's `close` writes what
    it buffered meanwhile (heartbeats, requests for instructions) to the socket already
    closed, and fails (RuntimeError under uvloop) after it has marked the client closed and
    stopped its tasks: nothing is left to close, nor anyone to tell.
    """
    with anyio.CancelScope(shield=True), anyio.move_on_after(5):
        try:
            await nc.close()
        except Exception as exc:
            log.debug("connection closed uncleanly", error=repr(exc))
