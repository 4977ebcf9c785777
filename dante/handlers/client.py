"""The client side of the command service: send a command, get its result or a typed error.

Used by the CLI, the agent and the tests. A command that gets no answer in time is sent
again with the same command id, which the service treats as the same command, so retrying
is always safe.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, TypeVar, overload

import msgspec
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from dante.schemas.codec import decode_reply, encode
from dante.schemas.commands import Command, ErrorInfo, Role

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

T = TypeVar("T")


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


def new_command_id() -> str:
    return uuid.uuid4().hex


def command_subject(role: Role, identity: str, verb: str) -> str:
    return f"dante.cmd.{role}.{identity}.{verb}"


class Client:
    """Sends commands as one identity (a renter, a provider's account, or the operator)."""

    def __init__(
        self, nc: NATS, role: Role, identity: str, *, timeout: float = 10.0, tries: int = 3
    ) -> None:
        self._nc = nc
        self.role = role
        self.identity = identity
        self._timeout = timeout
        self._tries = tries

    @overload
    async def send(self, command: Command, result: type[T]) -> T: ...

    @overload
    async def send(self, command: Command, result: None = None) -> Any: ...

    async def send(self, command: Command, result: type[T] | None = None) -> T | Any:
        """Send `command`; return its result decoded as `result`, or raise `CommandError`."""
        subject = command_subject(self.role, self.identity, command.VERB)
        payload = encode(command)
        last: Exception | None = None
        for _ in range(self._tries):
            try:
                msg = await self._nc.request(subject, payload, timeout=self._timeout)
            except NoRespondersError:
                raise PlatformUnavailable(
                    "no Dante command service answers: is the platform running (`dante up`)?"
                ) from None
            except (NatsTimeout, TimeoutError) as exc:
                last = exc
                continue
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
                    ErrorInfo(
                        code="internal", message=f"unexpected answer from the platform: {exc}"
                    )
                ) from None
        raise PlatformUnavailable(
            f"no answer from the platform after {self._tries} tries"
        ) from last
