"""Closing the live connections of an account whose login was revoked.

nats-server checks a credential when a connection is made, not afterwards: a revoked login
token would keep working on every connection already made with it. So when a login is
revoked the platform's system user asks every server for its connections in the `PUBLIC`
account (`$SYS.REQ.SERVER.PING.CONNZ`, a page at a time) and closes each one of the
account (`<account>` and its machines, `<account>/<machine>`) with
`$SYS.REQ.SERVER.<id>.KICK`. Clients reconnect by themselves, with whatever credential they
hold: the password or another live token gets them straight back in, the revoked token is
refused. The server does not say which credential a connection used, hence all of them;
a logout is rare, and an agent rides out a reconnect without losing anything.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import msgspec
import structlog

from dante.schemas.identity import MACHINE_SEPARATOR
from dante.services.auth.permissions import PUBLIC_ACCOUNT

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

log = structlog.get_logger(__name__)

PAGE: Final = 1024
#: How long servers have to answer a PING: every server of a cluster answers once.
GATHER_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class Connection:
    server_id: str
    cid: int
    user: str


class Sessions:
    """What the platform's system user does about connections: find an account's, close
    them."""

    def __init__(self, nc: NATS, *, gather_s: float = GATHER_S, timeout: float = 5.0) -> None:
        self._nc = nc
        self._gather_s = gather_s
        self._timeout = timeout

    async def close_all(self, account: str) -> int:
        """Close every connection of `account` and its machines on every server; how many."""
        closed = 0
        for connection in await self.of_account(account):
            if await self._kick(connection):
                closed += 1
        log.info("sessions.closed", account=account, connections=closed)
        return closed

    async def of_account(self, account: str) -> list[Connection]:
        machines = f"{account}{MACHINE_SEPARATOR}"
        return [
            connection
            for connection in await self.connections()
            if connection.user == account or connection.user.startswith(machines)
        ]

    async def connections(self) -> list[Connection]:
        """Every connection in the `PUBLIC` account, on every server that answers."""
        found: list[Connection] = []
        for server_id, page in await self._ping(_connz_request(0)):
            found += page.connections
            offset = page.listed
            while offset < page.total:
                reply = await self._request(
                    f"$SYS.REQ.SERVER.{server_id}.CONNZ", _connz_request(offset)
                )
                more = _page(reply)
                if not more.listed:
                    break
                found += more.connections
                offset += more.listed
        return found

    async def _ping(self, body: bytes) -> list[tuple[str, _Page]]:
        """Ask every server, and gather the answers that come within the gathering time."""
        answers: list[tuple[str, _Page]] = []
        inbox = self._nc.new_inbox()
        sub = await self._nc.subscribe(inbox)
        try:
            await self._nc.publish("$SYS.REQ.SERVER.PING.CONNZ", body, reply=inbox)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._gather_s
            while (left := deadline - loop.time()) > 0:
                try:
                    msg = await sub.next_msg(timeout=left)
                except TimeoutError:
                    break
                page = _page(msg.data)
                answers.append((page.server_id, page))
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        return answers

    async def _kick(self, connection: Connection) -> bool:
        subject = f"$SYS.REQ.SERVER.{connection.server_id}.KICK"
        try:
            reply = msgspec.json.decode(
                await self._request(subject, msgspec.json.encode({"cid": connection.cid}))
            )
        except Exception as exc:
            log.warning("sessions.kick_failed", cid=connection.cid, error=repr(exc))
            return False
        error = reply.get("error") if isinstance(reply, dict) else None
        if error:
            # Gone meanwhile is fine: it is closed either way.
            log.info("sessions.kick_refused", cid=connection.cid, error=error)
            return False
        return True

    async def _request(self, subject: str, body: bytes) -> bytes:
        msg = await self._nc.request(subject, body, timeout=self._timeout)
        return msg.data


@dataclass(frozen=True, slots=True)
class _Page:
    server_id: str
    total: int
    #: Entries on this page (of them, `connections` are the logged-in users').
    listed: int
    connections: list[Connection]


def _connz_request(offset: int) -> bytes:
    return msgspec.json.encode(
        {"acc": PUBLIC_ACCOUNT, "auth": True, "offset": offset, "limit": PAGE}
    )


def _page(data: bytes) -> _Page:
    """One server's CONNZ answer: `{"server": {"id": …}, "data": {"total": …, "connections":
    [{"cid": …, "authorized_user": …}, …]}}` (or `"error"`)."""
    answer: Any = msgspec.json.decode(data)
    if answer.get("error"):
        raise SessionsError(f"the server refused to list connections: {answer['error']}")
    server_id = str(answer["server"]["id"])
    body = answer.get("data") or {}
    entries = body.get("connections") or []
    connections = [
        Connection(server_id=server_id, cid=int(info["cid"]), user=info["authorized_user"])
        for info in entries
        if info.get("authorized_user")
    ]
    return _Page(
        server_id=server_id,
        total=int(body.get("total", 0)),
        listed=len(entries),
        connections=connections,
    )


class SessionsError(Exception):
    """A server would not say what is connected."""
