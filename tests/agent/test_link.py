"""The agent's `Link` on a real nats-server: a connection nats-py closed for good is
replaced, and whoever waits to retry is woken when it is. (The whole agent through a server
restart, a refused login: test_daemon_reconnect.)"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import nats
import pytest
from nats.aio.client import Client as NATS

from dante.agent.link import Link
from dante.events.natsd import NatsServer

pytestmark = pytest.mark.anyio


def opener(server: NatsServer, opened: list[NATS]) -> Callable[..., Awaitable[NATS]]:
    async def open_one(**callbacks: Any) -> NATS:
        nc = await nats.connect(server.url, max_reconnect_attempts=-1, **callbacks)
        opened.append(nc)
        return nc

    return open_one


async def test_a_connection_closed_for_good_is_replaced(nats_server: NatsServer) -> None:
    opened: list[NATS] = []
    link = Link(opener(nats_server, opened))
    await link.open()
    first, first_js = link.nc, link.jetstream()
    assert link.jetstream() is first_js  # one context per connection
    woken_after: list[float] = []

    async def retry_later() -> None:
        started = anyio.current_time()
        await link.pause(60)
        woken_after.append(anyio.current_time() - started)

    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(link.keep_open)
            tasks.start_soon(retry_later)
            await anyio.sleep(0.1)
            await first.close()  # what nats-py does when a reconnect is refused
            with anyio.fail_after(10):
                while link.nc is first or not woken_after:
                    await anyio.sleep(0.05)
            assert link.is_connected and link.reopened == 1 and len(opened) == 2
            assert woken_after[0] < 10  # not the whole minute
            assert link.jetstream() is not first_js
            # The new connection is the one in use.
            await link.nc.publish("check", b"")
            await link.nc.flush()
            tasks.cancel_scope.cancel()
    finally:
        await link.close()
    assert all(nc.is_closed for nc in opened)


async def test_a_fixed_link_is_never_opened_again_nor_closed(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        link = Link.fixed(nc)
        await link.keep_open()  # returns: nothing to keep
        await link.close()
        assert nc.is_connected  # its owner's to close
    finally:
        await nc.close()
