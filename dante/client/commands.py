"""The client side of the command service: send a command, get its result or a typed error.

Used by the CLI, the agent and the tests. A command that gets no answer in time is sent
again with the same command id, which the service treats as the same command, so retrying
is always safe.

The platform answers a connection of the `PUBLIC` account on its own reply prefix, never to
a reply subject (see dante/services/replies.py): `request` sends a token in the
`Dante-Reply` header and waits for `dante.reply.<identity>.<token>` (`Answers`), while the
request's own reply subject still brings the server's `no responders`.

nats-server refuses a publish the connection may not make (acting as someone else) with an
asynchronous error and no reply. On a connection opened by `dante.client.connect.connect`
(which watches those errors, see `Refusals`), such a command fails at once with a
`forbidden` `CommandError` instead of waiting for a reply that will never come.

A command refused `rate_limited` (its account sent more than its share) was not looked at:
it is sent again, once, after the retry-after the platform named (at most
`MAX_RATE_LIMIT_WAIT_S`); refused again, the `CommandError` says how long to wait.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
import weakref
from typing import TYPE_CHECKING, Any, Final, TypeVar, overload

import msgspec
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from dante.schemas.codec import decode_reply, encode
from dante.schemas.commands import Command, ErrorInfo, R, Role, reply_type
from dante.schemas.identity import REPLY_HEADER

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg

T = TypeVar("T")

#: How long the first try of a command waits for its answer before the same command is sent
#: again (each later try waits twice as long, up to the client's timeout). A cluster elects
#: a new stream leader in 4 to 9 s after its leader died; the service retries its appends
#: meanwhile and answers once one lands, so an answer usually comes to the first try. One
#: lost with the node it went through comes to the next: 2 s later rather than 10.
FIRST_WAIT_S: Final = 2.0
#: How long `no responders` (the service not subscribed: between two connections after its
#: node died) is asked again before the platform is reported as not running.
NO_RESPONDERS_GRACE_S: Final = 3.0
_NO_RESPONDERS_PAUSE_S: Final = 0.25
#: The longest a client waits on a `rate_limited` refusal before its one retry.
MAX_RATE_LIMIT_WAIT_S: Final = 5.0


class CommandError(Exception):
    """The platform refused the command; `info` has the code, message and field."""

    def __init__(self, info: ErrorInfo) -> None:
        super().__init__(info.message)
        self.info = info

    @property
    def code(self) -> str:
        return self.info.code


class PlatformUnavailable(Exception):
    """Nothing answered: the platform is not running or not reachable."""


_VIOLATION: Final = "permissions violation for publish to "


class Refusals:
    """The publishes nats-server refused on one connection, for whoever waits on them.

    Pass `on_error` as the connection's `error_cb` and register the connection with
    `watch_refusals`; nats-py reports a refused publish as an error naming its subject.
    """

    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Future[None]]] = {}

    async def on_error(self, error: Exception) -> None:
        text = str(error)
        at = text.lower().find(_VIOLATION)
        if at < 0:
            return
        subject = text[at + len(_VIOLATION) :].strip().strip("\"'").lower()
        for future in self._waiting.pop(subject, set()):
            if not future.done():
                future.set_result(None)

    def expect(self, subject: str) -> asyncio.Future[None]:
        """A future that completes if a publish to `subject` is refused; `forget` it after."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(subject.lower(), set()).add(future)
        return future

    def forget(self, subject: str, future: asyncio.Future[None]) -> None:
        waiting = self._waiting.get(subject.lower())
        if waiting is not None:
            waiting.discard(future)
            if not waiting:
                del self._waiting[subject.lower()]
        future.cancel()


_refusals: weakref.WeakKeyDictionary[NATS, Refusals] = weakref.WeakKeyDictionary()


def watch_refusals(nc: NATS, refusals: Refusals) -> None:
    _refusals[nc] = refusals


class Answers:
    """The platform's answers to one connection, on `<prefix>.<token>`, for their requests."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._waiting: dict[str, asyncio.Future[Msg]] = {}

    async def listen(self, nc: NATS) -> None:
        """Subscribe (before the first request: the server reads a connection in order)."""
        await nc.subscribe(f"{self.prefix}.*", cb=self._on_answer)

    async def _on_answer(self, msg: Msg) -> None:
        future = self._waiting.pop(msg.subject.rpartition(".")[2], None)
        if future is not None and not future.done():
            future.set_result(msg)

    def expect(self) -> tuple[str, asyncio.Future[Msg]]:
        """A fresh token, and the future its answer completes; `forget` it after."""
        token = secrets.token_hex(12)
        future: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        return token, future

    def forget(self, token: str) -> None:
        future = self._waiting.pop(token, None)
        if future is not None:
            future.cancel()


_answers: weakref.WeakKeyDictionary[NATS, Answers] = weakref.WeakKeyDictionary()


async def listen_for_answers(nc: NATS, prefix: str) -> None:
    """Have `request` on `nc` take the platform's answers on `prefix` (see `Answers`)."""
    answers = Answers(prefix)
    await answers.listen(nc)
    _answers[nc] = answers


def answer_prefix(nc: NATS) -> str | None:
    """The reply prefix `nc` takes the platform's answers on (None: its reply subjects)."""
    answers = _answers.get(nc)
    return None if answers is None else answers.prefix


def refused(subject: str) -> CommandError:
    return CommandError(
        ErrorInfo(
            code="forbidden",
            message=f"the server refused to let this connection publish to {subject}: "
            "you may act only as the account you logged in as",
        )
    )


async def request(nc: NATS, subject: str, payload: bytes, timeout: float) -> Msg:
    """`nc.request`, answered on the connection's reply prefix where it has one (`Answers`),
    failing at once with `refused` when the server refuses the publish."""
    refusals = _refusals.get(nc)
    answers = _answers.get(nc)
    if refusals is None and answers is None:
        return await nc.request(subject, payload, timeout=timeout)
    denied = None if refusals is None else refusals.expect(subject)
    token, answered = (None, None) if answers is None else answers.expect()
    headers = None if token is None else {REPLY_HEADER: token}
    # Its reply subject brings `no responders` (or a timeout); the answer comes to `answered`.
    asking = asyncio.ensure_future(nc.request(subject, payload, timeout=timeout, headers=headers))
    waiting: set[asyncio.Future[Any]] = {asking} | {f for f in (denied, answered) if f is not None}
    try:
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if answered is not None and answered.done():
            return answered.result()
        if not asking.done():
            raise refused(subject)
        return asking.result()
    finally:
        if refusals is not None and denied is not None:
            refusals.forget(subject, denied)
        if answers is not None and token is not None:
            answers.forget(token)
        if not asking.done():
            asking.cancel()


@overload
def decode_answer(msg: Msg, result: type[T]) -> T: ...


@overload
def decode_answer(msg: Msg, result: None = None) -> Any: ...


def decode_answer(msg: Msg, result: type[T] | None = None) -> T | Any:
    """The result in the platform's answer `msg`, decoded as `result` (None: as JSON), or
    its refusal raised as `CommandError`."""
    reply = decode_reply(msg.data)
    if not reply.ok:
        assert reply.error is not None
        raise CommandError(reply.error)
    if result is None:
        return msgspec.json.decode(reply.result)
    try:
        return msgspec.json.decode(reply.result, type=result)
    except msgspec.ValidationError as exc:
        raise CommandError(
            ErrorInfo(code="internal", message=f"unexpected answer from the platform: {exc}")
        ) from None


def rate_limit_wait(error: ErrorInfo) -> float | None:
    """Seconds to wait before sending again a command refused `rate_limited`; else None."""
    if error.code != "rate_limited":
        return None
    return min((error.retry_after_ms or 1000) / 1000, MAX_RATE_LIMIT_WAIT_S)


def new_command_id() -> str:
    return uuid.uuid4().hex


def command_subject(role: Role, identity: str, verb: str) -> str:
    return f"dante.cmd.{role}.{identity}.{verb}"


class Client:
    """Sends commands as one identity (a renter, a provider's account, or the operator)."""

    def __init__(
        self, nc: NATS, role: Role, identity: str, *, timeout: float = 10.0, tries: int = 4
    ) -> None:
        self._nc = nc
        self.role = role
        self.identity = identity
        self._timeout = timeout
        self._tries = tries

    async def ask(self, command: Command[R]) -> R:
        """Send `command`; its answer, decoded as what the command says it is answered with
        (`Command[R]`), or raise `CommandError`."""
        answer: R = await self.send(command, reply_type(type(command)))
        return answer

    @overload
    async def send(self, command: Command[Any], result: type[T]) -> T: ...

    @overload
    async def send(self, command: Command[Any], result: None = None) -> Any: ...

    async def send(self, command: Command[Any], result: type[T] | None = None) -> T | Any:
        """Send `command`; return its result decoded as `result`, or raise `CommandError`.

        Unanswered, the same command (same id: the service answers it once) is sent again
        after `waits()[0]` seconds, then `waits()[1]`, … while the earlier requests stay
        open: whichever answer comes first is the answer. So a request lost with the server
        it went through (a cluster's node that died) costs seconds, not the whole timeout,
        and a slow answer is never thrown away. Nobody listening (`no responders`: the
        service between two connections, as when its node died) is asked again for
        `NO_RESPONDERS_GRACE_S` before it is reported as `PlatformUnavailable`. Refused
        `rate_limited` (before the service looked at it), it is sent once more after the
        wait the refusal names (at most `MAX_RATE_LIMIT_WAIT_S`).
        """
        subject = command_subject(self.role, self.identity, command.VERB)
        payload = encode(command)
        limited = False
        while True:
            try:
                return await self._send(subject, payload, result)
            except CommandError as exc:
                wait = rate_limit_wait(exc.info)
                if wait is None or limited:
                    raise
                # Refused before it was looked at: the same command again is safe.
                limited = True
                await asyncio.sleep(wait)

    async def _send(self, subject: str, payload: bytes, result: type[T] | None) -> T | Any:
        loop = asyncio.get_running_loop()
        waits = self.waits()
        started = loop.time()
        deadline = started + sum(waits)
        asking: set[asyncio.Future[Msg]] = set()
        last: Exception | None = None
        tries = 0
        try:
            while tries < len(waits) and (remaining := deadline - loop.time()) > 0:
                asking.add(asyncio.ensure_future(request(self._nc, subject, payload, remaining)))
                until = loop.time() + waits[tries]
                tries += 1
                while asking and (left := until - loop.time()) > 0:
                    done, _ = await asyncio.wait(
                        asking, timeout=left, return_when=asyncio.FIRST_COMPLETED
                    )
                    unheard = False
                    for future in done:
                        asking.discard(future)
                        error = future.exception()
                        if error is None:
                            return decode_answer(future.result(), result)
                        if isinstance(error, NoRespondersError):
                            unheard = True
                        elif isinstance(error, NatsTimeout | TimeoutError):
                            last = error
                        else:
                            raise error
                    if unheard and not asking:
                        if loop.time() - started >= NO_RESPONDERS_GRACE_S:
                            raise PlatformUnavailable(
                                "no Dante command service answers: is the platform running "
                                "(`dante up`)?"
                            ) from None
                        await asyncio.sleep(_NO_RESPONDERS_PAUSE_S)
                        tries -= 1  # nobody heard it: that was no try
                        break
        finally:
            for future in asking:
                future.cancel()
        raise PlatformUnavailable(f"no answer from the platform after {tries} tries") from last

    def waits(self) -> list[float]:
        """How long each try waits before the next is sent: `FIRST_WAIT_S`, doubling, at
        most the timeout; the last try waits the whole timeout."""
        growing = [min(self._timeout, FIRST_WAIT_S * 2**n) for n in range(self._tries - 1)]
        return [*growing, self._timeout]
