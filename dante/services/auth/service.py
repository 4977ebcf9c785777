"""The platform's side of identity: the auth callout and the account operations, as one task.

`Identity.run` is one more task of the platform (`Platform.run(extra=[identity.run])`): it
makes sure the operator account accepts the token `dante up` hands its user, answers the
auth callout, and serves `dante.acct.…` (sign-up, login tokens, logout). Like the command
service it joins queue groups, so several platform processes share the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

import anyio
import structlog

from dante.domain.rejection import Rejected
from dante.schemas.accounts import (
    AccountResult,
    IssueToken,
    RevokeToken,
    SignUp,
    TokenResult,
)
from dante.schemas.codec import DecodeError, decode_as, error_reply, ok_reply
from dante.schemas.commands import ErrorInfo
from dante.schemas.identity import ACCOUNT_PREFIX, SIGNUP_SUBJECT
from dante.services.auth.accounts import AccountBook, AccountRecord, open_account, set_password
from dante.services.auth.callout import AuthCallout
from dante.services.auth.gate import AddressGate
from dante.services.auth.limits import SIGNUP_TRIES, ClientLimits, LoginLimits
from dante.services.auth.throttle import Throttle
from dante.services.replies import answer

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg

    from dante.events.store import EventStore
    from dante.services.auth.jwt import Signer
    from dante.services.auth.sessions import Sessions

log = structlog.get_logger(__name__)

QUEUE: Final = "dante-accounts"
#: Sign-ups handled at once by one process (each costs a scrypt).
_SIGNUPS: Final = 4
#: Sign-up connections remembered (the least recently used forgotten first).
_MAX_SIGNUP_CONNECTIONS: Final = 100_000


@dataclass(slots=True)
class _SignUpConnection:
    tries: int = 0
    opened: str | None = None
    turn: asyncio.Lock = field(default_factory=asyncio.Lock)


class SignUpTries:
    """What each sign-up connection (by its nonce) has done in this process: it may open
    one account, in at most `SIGNUP_TRIES` tries, one at a time. Asking again for the
    account it opened is a harmless repeat (an answer that was lost), within those tries;
    anything more is refused (`quota_exceeded`), before any password is hashed. With
    several platform processes each counts its own share of a connection's requests, as
    for logins."""

    def __init__(self, tries: int = SIGNUP_TRIES) -> None:
        self._tries = tries
        self._seen: OrderedDict[str, _SignUpConnection] = OrderedDict()

    @contextlib.asynccontextmanager
    async def attempt(self, nonce: str, username: str) -> AsyncIterator[Callable[[], None]]:
        """Take the connection's turn and count a try; the caller calls what it is given
        once the account is open."""
        entry = self._seen.pop(nonce, None) or _SignUpConnection()
        self._seen[nonce] = entry
        while len(self._seen) > _MAX_SIGNUP_CONNECTIONS:
            self._seen.popitem(last=False)
        async with entry.turn:
            if entry.opened is not None and entry.opened != username:
                raise Rejected(
                    "quota_exceeded",
                    f"this sign-up connection opened the account {entry.opened}; one sign-up "
                    "connection opens one account (connect again for another)",
                )
            if entry.tries >= self._tries:  # a repeat costs a password check too
                raise Rejected(
                    "quota_exceeded",
                    f"this sign-up connection made its {self._tries} tries; connect again",
                )
            entry.tries += 1

            def opened() -> None:
                entry.opened = username

            yield opened


@dataclass(frozen=True, slots=True)
class _Then:
    """An answer, and what to do once it is sent."""

    result: Any
    action: Callable[[], Awaitable[object]]


class Identity:
    """The auth callout and the account service of one platform process."""

    def __init__(
        self,
        nc: NATS,
        store: EventStore,
        signer: Signer,
        *,
        operator_token: str | None = None,
        throttle: Throttle | None = None,
        sessions: Sessions | None = None,
        login_limits: LoginLimits | None = None,
        client_limits: ClientLimits | None = None,
        spare: NATS | None = None,
    ) -> None:
        self._nc = nc
        self._store = store
        self.book = AccountBook(nc.jetstream())
        self.callout = AuthCallout(
            nc,
            self.book,
            signer,
            throttle=throttle,
            gate=AddressGate(login_limits),
            client_limits=client_limits,
        )
        #: The callout answers on `spare` too, a connection to another node of a cluster
        #: (`dante up` opens one): when the node under `nc` dies, the clients that were on
        #: it log in again elsewhere at once, before `nc` has reconnected and subscribed
        #: again, and a login nobody answers is refused (nats-py then closes for good).
        #: It reads the accounts through its own connection and shares the limits.
        self.callouts = [self.callout]
        if spare is not None:
            self.callouts.append(
                AuthCallout(
                    spare,
                    AccountBook(spare.jetstream()),
                    signer,
                    throttle=self.callout.throttle,
                    gate=self.callout.gate,
                    client_limits=client_limits,
                )
            )
        self._operator_token = operator_token
        #: Closes the connections of an account whose login is revoked (None: they stay up
        #: until they reconnect, when the revoked token is refused).
        self.sessions = sessions
        self._signups = asyncio.Semaphore(_SIGNUPS)
        self.signup_tries = SignUpTries()
        self._tasks: set[asyncio.Task[None]] = set()
        self.ready = asyncio.Event()

    async def open_account(
        self, name: str, password: str, role: Literal["renter", "provider"]
    ) -> AccountRecord:
        """Open an account server-side (see `dante.services.auth.accounts.open_account`)."""
        return await open_account(self.book, self._store, name, password, role)

    async def set_password(
        self, name: str, password: str, role: Literal["renter", "provider"]
    ) -> AccountRecord:
        """Open an account, or reset its password, server-side (the demo's accounts)."""
        return await set_password(self.book, self._store, name, password, role)

    async def run(self) -> None:
        if self._operator_token is not None:
            await self.book.ensure_operator(self._operator_token, label="dante up")
        subs = [
            await self._nc.subscribe(SIGNUP_SUBJECT, queue=QUEUE, cb=self._spawn),
            await self._nc.subscribe(f"{ACCOUNT_PREFIX}.*.*", queue=QUEUE, cb=self._spawn),
        ]
        await self._nc.flush()
        try:
            async with anyio.create_task_group() as tg:
                for callout in self.callouts:
                    tg.start_soon(callout.run)
                for callout in self.callouts:
                    await callout.ready.wait()
                self.ready.set()
                log.info("identity.ready")
        finally:
            with anyio.CancelScope(shield=True):
                for sub in subs:
                    with contextlib.suppress(Exception):
                        await sub.unsubscribe()
                for task in list(self._tasks):
                    task.cancel()

    async def _spawn(self, msg: Msg) -> None:
        task = asyncio.create_task(self._serve(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, msg: Msg) -> None:
        then: _Then | None = None
        try:
            result = await self._handle(msg.subject, msg.data)
            if isinstance(result, _Then):
                result, then = result.result, result
            body = ok_reply(result)
        except Rejected as rejected:
            body = error_reply(rejected.info)
        except DecodeError as exc:
            body = error_reply(ErrorInfo(code="malformed", message=exc.reason, field=exc.field))
        except Exception:
            log.exception("accounts.crash", subject=msg.subject)
            body = error_reply(ErrorInfo(code="internal", message="internal error; retry later"))
        with contextlib.suppress(Exception):
            await answer(self._nc, msg.subject, msg.reply, msg.headers, body)
        if then is not None:
            # After the answer: the connection that asked may be one of those it closes.
            with contextlib.suppress(Exception):
                await self._nc.flush()
            try:
                await then.action()
            except Exception:
                log.exception("accounts.after_failed", subject=msg.subject)

    async def _handle(self, subject: str, data: bytes) -> Any:
        if subject == SIGNUP_SUBJECT or subject.startswith(f"{SIGNUP_SUBJECT}."):
            # dante.acct.signup.<nonce>: a sign-up connection's own (the answer goes there).
            request = decode_as(data, SignUp, what="sign-up")
            nonce = subject[len(SIGNUP_SUBJECT) + 1 :]
            async with self.signup_tries.attempt(nonce, request.username) as opened:
                async with self._signups:
                    record = await open_account(
                        self.book, self._store, request.username, request.password, request.role
                    )
                opened()
            return AccountResult(username=record.name, role=record.role)
        # dante.acct.<name>.<verb>: nats-server let only <name> itself publish here.
        _, _, name, verb = subject.split(".")
        if verb == "token":
            # ... and only when it logged in with its password.
            token_request = decode_as(data, IssueToken, what="token request")
            account = await self.book.get(name)
            if account is None:
                raise Rejected("forbidden", f"there is no account {name}")
            token = await self.book.issue_token(name, label=token_request.label)
            log.info("login.token_issued", account=name, label=token_request.label)
            return TokenResult(username=name, role=account.role, token=token)
        if verb == "logout":
            revoke = decode_as(data, RevokeToken, what="logout")
            if not await self.book.revoke_token(name, revoke.token):
                raise Rejected("forbidden", "that login token is not one of this account's")
            log.info("login.token_revoked", account=name)
            if self.sessions is None:
                return None
            return _Then(result=None, action=functools.partial(self.sessions.close_all, name))
        raise Rejected("unknown_verb", f"there is no account operation {verb!r}")
