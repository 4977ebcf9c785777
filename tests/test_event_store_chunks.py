"""Reading the log in chunks: the same events as one by one, in order, bounded, following."""

from __future__ import annotations

import anyio
import pytest

from dante.events.pipeline import Pipeline
from dante.events.records import Append
from dante.events.store import EventStore
from tests.factories import deposit

pytestmark = pytest.mark.anyio


async def test_chunks_hold_every_event_in_order_up_to_the_stop(store: EventStore) -> None:
    await Pipeline(store).append_all(
        Append(event=deposit("alice", 1, event_id=f"e-{i}")) for i in range(2500)
    )
    one_by_one = [seq async for seq, *_ in store.read_raw()]
    chunks = [chunk async for chunk in store.read_chunks(max_waiting=300)]
    assert [item[0] for chunk in chunks for item in chunk] == one_by_one == list(range(1, 2501))
    assert all(0 < len(chunk) <= 2500 for chunk in chunks)
    middle = [item[0] async for chunk in store.read_chunks(1000, stop=1200) for item in chunk]
    assert middle == list(range(1000, 1201))
    assert [chunk async for chunk in store.read_chunks(10, stop=9)] == []


async def test_chunks_follow_new_events(store: EventStore) -> None:
    await store.append(Append(event=deposit("alice", 1)))
    seen: list[int] = []
    with anyio.move_on_after(10):
        async for chunk in store.read_chunks(follow=True):
            seen.extend(item[0] for item in chunk)
            if seen[-1] == 1:
                await store.append(Append(event=deposit("alice", 2)))
            if seen[-1] == 2:
                break
    assert seen == [1, 2]


async def test_an_empty_log_gives_no_chunks(store: EventStore) -> None:
    assert [chunk async for chunk in store.read_chunks()] == []


async def test_messages_carry_their_atomic_batch(store: EventStore) -> None:
    await store.append(Append(event=deposit("alice", 1)))
    await store.append(*(Append(event=deposit(w, 1)) for w in ("bob", "carol", "dave")))
    await store.append(Append(event=deposit("erin", 1)))
    messages = [m async for chunk in store.read_messages() for m in chunk]
    assert [m.seq for m in messages] == [1, 2, 3, 4, 5]
    assert [m.committed for m in messages] == [True, False, False, True, True]
    batch = {m.batch_id for m in messages[1:4]}
    assert len(batch) == 1 and None not in batch
    assert messages[0].batch_id is None and messages[4].batch_id is None
    assert messages[2].subject == "dante.evt.wallet.carol"
    assert messages[2].headers["Nats-Batch-Sequence"] == "2"


async def test_a_scan_stops_after_its_limit(store: EventStore) -> None:
    await Pipeline(store).append_all(
        Append(event=deposit("alice", 1, event_id=f"e-{i}")) for i in range(1500)
    )
    assert [s async for s, _, _ in store.scan_raw("dante.evt.>", 7, limit=3)] == [7, 8, 9]
    assert len([s async for s, _, _ in store.scan_raw("dante.evt.>", 2, limit=1200)]) == 1200
    assert [s async for s, _, _ in store.scan_raw("dante.evt.>", 1, limit=0)] == []
