"""The limits of every client connection, enforced by the real nats-server (nats.conf's
`PUBLIC` account, from `DANTE_CLIENT_…`): a client past them is refused or cut off, and
everybody else carries on."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from dante.client.commands import Client
from dante.events.natsd import NatsServer, default_config
from dante.schemas import commands as cmd
from dante.services.auth.installation import InstallationSecrets
from dante.services.auth.limits import ClientLimits
from tests.auth.conftest import Secured

pytestmark = pytest.mark.anyio

LIMITS = ClientLimits(subscriptions=20, payload=8192)


@pytest.fixture
def auth_server(tmp_path: Path, installation: InstallationSecrets) -> Iterator[NatsServer]:
    """The shipped configuration, with small limits for clients' connections."""
    server = NatsServer(
        store_dir=tmp_path / "nats",
        config=default_config(),
        env=installation.server_env(LIMITS),
    ).start()
    try:
        yield server
    finally:
        server.stop()


async def logged_in(
    server: NatsServer, user: str, password: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    assert server.client_port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", server.client_port)
    assert (await reader.readline()).startswith(b"INFO ")
    connect = {"user": user, "pass": password, "verbose": False, "pedantic": False}
    writer.write(b"CONNECT " + json.dumps(connect).encode() + b"\r\nPING\r\n")
    assert await reader.readline() == b"PONG\r\n"
    return reader, writer


async def answers(reader: asyncio.StreamReader) -> list[bytes]:
    """The server's lines up to its PONG (or until it closes the connection)."""
    lines = []
    try:
        while line := await asyncio.wait_for(reader.readline(), 5):
            lines.append(line)
            if line == b"PONG\r\n":
                break
    except ConnectionError:
        pass
    return lines


async def test_a_connection_holds_at_most_its_subscriptions(
    secured: Secured, auth_server: NatsServer
) -> None:
    await secured.sign_up("mallory", "mallory-pass")
    reader, writer = await logged_in(auth_server, "mallory", "mallory-pass")
    for i in range(25):
        writer.write(f"SUB _INBOX_mallory.s{i} {i}\r\n".encode())
    writer.write(b"PING\r\n")
    lines = await answers(reader)
    assert lines.count(b"-ERR 'maximum subscriptions exceeded'\r\n") == 5
    assert lines[-1] == b"PONG\r\n"  # refused, not cut off
    writer.close()


async def test_a_message_past_the_payload_limit_cuts_the_connection_off(
    secured: Secured, auth_server: NatsServer
) -> None:
    await secured.sign_up("mallory", "mallory-pass")
    await secured.sign_up("alice", "alice-pass")
    alice = Client(await secured.login("alice", "alice-pass"), "renter", "alice")
    reader, writer = await logged_in(auth_server, "mallory", "mallory-pass")
    body = b"x" * (LIMITS.payload + 1)
    writer.write(b"PUB dante.cmd.renter.mallory.balance %d\r\n%b\r\nPING\r\n" % (len(body), body))
    lines = await answers(reader)
    assert lines[0] == b"-ERR 'Maximum Payload Violation'\r\n"
    assert b"PONG\r\n" not in lines
    writer.close()
    # Everybody else carries on.
    balance = await alice.ask(cmd.GetBalance())
    assert balance.available_udgpu == 0
