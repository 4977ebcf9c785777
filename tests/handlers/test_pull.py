"""The puller hands over messages as they arrive, and says when its consumer is gone."""

from __future__ import annotations

import asyncio
import time

import pytest
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig

from dante.events.store import EventStore
from dante.handlers.pull import ConsumerGone, Puller

pytestmark = pytest.mark.anyio


async def _puller(nc: NATS, store: EventStore, batch: int = 256) -> Puller:
    sub = await nc.jetstream().pull_subscribe(
        "dante.evt.>",
        durable="pull-test",
        stream=store.stream,
        config=ConsumerConfig(durable_name="pull-test", ack_policy=AckPolicy.EXPLICIT),
    )
    return Puller(sub, batch, expires=5.0)


async def test_a_message_is_handed_over_without_waiting_for_a_full_batch(
    nc: NATS, store: EventStore
) -> None:
    puller = await _puller(nc, store)
    js = nc.jetstream()

    async def later() -> None:
        await asyncio.sleep(0.2)
        await js.publish("dante.evt.wallet.w1", b"{}")

    task = asyncio.create_task(later())
    started = time.monotonic()
    msgs = await puller.next()
    assert len(msgs) == 1
    assert time.monotonic() - started < 2  # the request lasts 5 s and asks for 256
    await task
    for n in range(5):
        await js.publish(f"dante.evt.wallet.w{n}", b"{}")
    got: list[object] = []
    while len(got) < 5:
        got += await puller.next()
    assert len(got) == 5


async def test_a_deleted_consumer_is_reported(nc: NATS, store: EventStore) -> None:
    puller = await _puller(nc, store)
    waiting = asyncio.create_task(puller.next())
    await asyncio.sleep(0.2)
    await nc.jetstream().delete_consumer(store.stream, "pull-test")
    with pytest.raises(ConsumerGone):
        await waiting
