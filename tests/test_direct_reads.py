"""Direct gets that lose their request (a cluster's node that died) or get a slow answer:
asked once more, from where the batch got to, and each message read once."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from dante.events.direct import FIRST_WAIT_S, DirectReader
from dante.events.errors import EventStoreError
from dante.events.pipeline import Pipeline
from dante.events.records import Append
from dante.events.store import EventStore
from dante.events.subjects import STREAM
from tests.factories import deposit

pytestmark = pytest.mark.anyio

RELAY = "$RELAY.API"


class Relay:
    """Stands between a reader and JetStream's API: loses or delays the first requests."""

    def __init__(self, nc: NATS, *, lose: int = 0, delay_first: float = 0.0) -> None:
        self.nc = nc
        self.lose = lose
        self.delay_first = delay_first
        self.seen = 0

    async def start(self) -> None:
        await self.nc.subscribe(f"{RELAY}.>", cb=self._on_request)

    async def _on_request(self, msg: Msg) -> None:
        self.seen += 1
        if self.seen <= self.lose:
            return  # lost with the node it went through
        if self.seen == 1 and self.delay_first:
            asyncio.get_running_loop().call_later(
                self.delay_first, lambda: asyncio.ensure_future(self._forward(msg))
            )
            return
        await self._forward(msg)

    async def _forward(self, msg: Msg) -> None:
        subject = "$JS.API" + msg.subject[len(RELAY) :]
        await self.nc.publish(subject, msg.data, reply=msg.reply)


async def _stored(store: EventStore, n: int) -> None:
    await Pipeline(store).append_all(
        Append(event=deposit("alice", 1, event_id=f"e-{i}")) for i in range(n)
    )


async def test_a_lost_request_is_sent_again_and_the_read_completes(
    nc: NATS, store: EventStore
) -> None:
    await _stored(store, 30)
    relay = Relay(nc, lose=1)
    await relay.start()
    reader = DirectReader(nc, STREAM, timeout=5.0, api_prefix=RELAY)
    started = asyncio.get_running_loop().time()
    seqs = [m.seq async for m in reader.messages("dante.evt.wallet.alice")]
    took = asyncio.get_running_loop().time() - started
    assert seqs == list(range(1, 31))
    assert relay.seen == 2 and FIRST_WAIT_S <= took < 5.0
    last = DirectReader(nc, STREAM, timeout=5.0, api_prefix=RELAY)
    relay.seen, relay.lose = 0, 1
    found = await last.last("dante.evt.wallet.alice")
    assert found is not None and found.seq == 30


async def test_a_slow_first_answer_is_not_read_twice(nc: NATS, store: EventStore) -> None:
    await _stored(store, 30)
    relay = Relay(nc, delay_first=FIRST_WAIT_S + 0.5)
    await relay.start()
    reader = DirectReader(nc, STREAM, timeout=5.0, api_prefix=RELAY)
    seqs = [m.seq async for m in reader.messages("dante.evt.wallet.alice")]
    await asyncio.sleep(1.0)  # the slow answer arrives now, to an inbox nobody reads
    assert seqs == list(range(1, 31))
    assert relay.seen == 2


async def test_a_read_nobody_answers_fails_after_its_retry(nc: NATS, store: EventStore) -> None:
    await _stored(store, 3)
    relay = Relay(nc, lose=10)
    await relay.start()
    reader = DirectReader(nc, STREAM, timeout=3.0, api_prefix=RELAY)
    with pytest.raises(EventStoreError, match="timed out"):
        _ = [m async for m in reader.messages("dante.evt.wallet.alice")]
    assert relay.seen == 2
