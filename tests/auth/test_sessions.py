"""A revoked login ends the connections made with it, on the server, at once."""

from __future__ import annotations

import asyncio
import contextlib
import gc

import pytest
from nats.aio.client import Client as NATS

from dante.client.accounts import issue_token, revoke_token
from dante.client.commands import Client, CommandError, PlatformUnavailable
from dante.schemas import commands as cmd
from tests.auth.conftest import Secured

pytestmark = pytest.mark.anyio


async def balance(nc: NATS, name: str) -> int:
    reply = await Client(nc, "renter", name, timeout=1, tries=1).send(cmd.GetBalance())
    return int(reply["total_udgpu"])


async def works(nc: NATS, name: str) -> bool:
    try:
        await balance(nc, name)
    except (CommandError, PlatformUnavailable, TimeoutError):
        return False
    return True


# nats-py 2.16 replaces its transport on every failed reconnect attempt without closing the
# old one (`_attempt_reconnect`): each refused attempt of the cut connection leaves a socket
# for the garbage collector, which warns. Collected here, so no other test is blamed.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_revoking_a_token_cuts_the_connections_made_with_it(secured: Secured) -> None:
    await secured.sign_up("alice", "alice-pass")
    await secured.sign_up("bob", "bob-pass")
    laptop = await secured.login("alice", "alice-pass")
    issued = await issue_token(laptop, "alice", label="old laptop")
    stolen = await secured.login("alice", issued.token)
    bob = await secured.login("bob", "bob-pass")
    assert await works(stolen, "alice")

    await revoke_token(laptop, "alice", issued.token)

    # The connection made with the token is closed by the server and cannot come back:
    # its reconnects present the revoked token.
    for _ in range(100):
        if not stolen.is_connected:
            break
        await asyncio.sleep(0.05)
    assert not stolen.is_connected
    await asyncio.sleep(3)  # time for several reconnect attempts
    assert not await works(stolen, "alice")
    # The password's connection was closed too (the server cannot tell them apart) and is
    # back by itself; another account's was never touched.
    for _ in range(100):
        if await works(laptop, "alice"):
            break
        await asyncio.sleep(0.1)
    assert await works(laptop, "alice")
    assert laptop.stats["reconnects"] >= 1
    assert bob.stats["reconnects"] == 0
    assert await works(bob, "bob")
    # Closing a connection that is between two refused reconnects can meet the server's
    # reset of the last one (nats-py drains that socket): not what this test is about.
    with contextlib.suppress(ConnectionError):
        await stolen.close()
    gc.collect()


async def test_an_accounts_connections_are_its_own_and_its_machines(secured: Secured) -> None:
    await secured.sign_up("dave", "dave-pass-1", role="provider")
    await secured.sign_up("davey", "davey-pass-1")
    await secured.login("dave", "dave-pass-1")
    await secured.login("dave", "dave-pass-1", machine="prv-1")
    await secured.login("davey", "davey-pass-1")
    sessions = secured.identity.sessions
    assert sessions is not None

    found = await sessions.of_account("dave")

    assert sorted(connection.user for connection in found) == ["dave", "dave/prv-1"]
    assert [c.user for c in await sessions.of_account("davey")] == ["davey"]
    # The platform's own users are not in the account the renters and providers are in.
    users = {connection.user for connection in await sessions.connections()}
    assert users == {"dave", "dave/prv-1", "davey"}
