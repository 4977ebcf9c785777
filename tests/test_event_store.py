from __future__ import annotations

import asyncio

import msgspec
import pytest
from nats.aio.client import Client as NATS

from dante.events.errors import AppendRejected, ConcurrencyConflict
from dante.events.pipeline import Pipeline
from dante.events.records import Append
from dante.events.store import EventStore
from dante.events.subjects import STREAM, subject_of
from dante.events.upcasting import registered
from dante.schemas import events as ev
from tests.factories import deposit, make, sample_events
from tests.factories import registered as provider_registered

pytestmark = pytest.mark.anyio


async def test_every_event_type_round_trips_through_the_log(store: EventStore) -> None:
    samples = sample_events()
    for event in samples:
        await store.append(Append(event=event))
    read = [r.event async for r in store.read()]
    assert read == samples


async def test_append_returns_positions_and_load_folds_one_aggregate(store: EventStore) -> None:
    first = await store.append(Append(event=deposit("alice", 1), expected=0))
    await store.append(Append(event=deposit("bob", 1), expected=0))
    second = await store.append(Append(event=deposit("alice", 2), expected=first.last))
    assert (first.seqs, second.seqs) == ((1,), (3,))
    loaded = await store.load("wallet", "alice")
    assert [r.seq for r in loaded] == [1, 3]
    assert (
        sum(r.event.amount for r in loaded if isinstance(r.event, ev.FundsDeposited)) == 3_000_000
    )
    assert await store.version(subject_of("wallet", "alice")) == 3
    assert await store.version(subject_of("wallet", "nobody")) == 0
    assert [r.seq for r in await store.load("wallet", "alice", after=1)] == [3]


async def test_a_stale_expected_version_is_a_conflict(store: EventStore) -> None:
    await store.append(Append(event=deposit("alice", 1), expected=0))
    await store.append(Append(event=deposit("alice", 1), expected=1))
    with pytest.raises(ConcurrencyConflict) as info:
        await store.append(Append(event=deposit("alice", 1), expected=1))
    assert (info.value.expected, info.value.actual) == (1, 2)
    with pytest.raises(ConcurrencyConflict):
        await store.append(Append(event=deposit("alice", 1), expected=0))
    assert await store.last_seq() == 2


async def test_two_concurrent_appends_on_one_version_only_one_wins(store: EventStore) -> None:
    await store.append(Append(event=deposit("alice", 1), expected=0))
    results = await asyncio.gather(
        *(store.append(Append(event=deposit("alice", 1), expected=1)) for _ in range(10)),
        return_exceptions=True,
    )
    assert sum(1 for r in results if not isinstance(r, Exception)) == 1
    assert sum(1 for r in results if isinstance(r, ConcurrencyConflict)) == 9
    assert await store.last_seq() == 2


async def test_a_retry_with_the_same_message_id_appends_nothing(store: EventStore) -> None:
    event = deposit("alice", 1, event_id="cmd:abc:0")
    first = await store.append(Append(event=event))
    again = await store.append(Append(event=event))
    assert again.duplicate and again.seqs == first.seqs
    assert await store.last_seq() == 1


async def test_a_retry_after_a_lost_ack_with_a_stale_version_is_not_a_conflict(
    store: EventStore,
) -> None:
    # The first append landed but its ack was lost; the aggregate has moved on since.
    event = deposit("alice", 1, event_id="cmd:lost-ack:0")
    first = await store.append(Append(event=event, expected=0))
    await store.append(Append(event=deposit("alice", 5), expected=first.last))
    retry = await store.append(Append(event=event, expected=0))
    assert retry.duplicate and retry.seqs == first.seqs
    assert await store.last_seq() == 2


async def test_a_batch_lands_whole_or_not_at_all(store: EventStore) -> None:
    await store.append(Append(event=deposit("alice", 1), expected=0))
    charge = make(
        ev.FundsCharged,
        wallet_id="alice",
        job_id="job-1",
        attempt=1,
        amount=100,
        usage_seq=1,
        total_gpu_ms=1,
        price=1,
        fee_bps=500,
        provider_wallet="bob",
    )
    credit = make(
        ev.ProviderCredited,
        wallet_id="bob",
        job_id="job-1",
        attempt=1,
        amount=95,
        charge_id=charge.event_id,
    )
    fee = make(
        ev.FeeCollected,
        wallet_id="platform",
        job_id="job-1",
        attempt=1,
        amount=5,
        charge_id=charge.event_id,
    )
    # The renter's wallet is at 1, not 0: nothing of the batch may land.
    with pytest.raises(ConcurrencyConflict) as info:
        await store.append(
            Append(event=charge, expected=0), Append(event=credit), Append(event=fee)
        )
    assert info.value.subject == subject_of("wallet", "alice")
    assert await store.last_seq() == 1
    landed = await store.append(
        Append(event=charge, expected=1), Append(event=credit), Append(event=fee)
    )
    assert landed.seqs == (2, 3, 4)
    retried = await store.append(
        Append(event=charge, expected=1), Append(event=credit), Append(event=fee)
    )
    assert retried.duplicate and retried.seqs == (2, 3, 4)
    assert await store.last_seq() == 4
    subjects = [r.subject async for r in store.read(2)]
    assert subjects == [
        "dante.evt.wallet.alice",
        "dante.evt.wallet.bob",
        "dante.evt.wallet.platform",
    ]


async def test_replay_from_a_middle_sequence(store: EventStore) -> None:
    for i in range(20):
        await store.append(Append(event=deposit(f"u{i % 3}x", 1)))
    seqs = [r.seq async for r in store.read(11)]
    assert seqs == list(range(11, 21))
    assert [r.seq async for r in store.read(5, stop=7)] == [5, 6, 7]
    assert [r.seq async for r in store.read(21)] == []


async def test_follow_sees_new_events(store: EventStore) -> None:
    await store.append(Append(event=deposit("alice", 1)))
    seen: list[int] = []

    async def follow() -> None:
        async for recorded in store.read(1, follow=True):
            seen.append(recorded.seq)
            if recorded.seq == 3:
                return

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.1)
    await store.append(Append(event=deposit("alice", 1)))
    await store.append(Append(event=deposit("alice", 1)))
    await asyncio.wait_for(task, 5)
    assert seen == [1, 2, 3]


async def test_loading_a_long_aggregate_spans_several_batches(store: EventStore) -> None:
    pipeline = Pipeline(store, window=500)
    await pipeline.append_all(Append(event=deposit("alice", 1)) for _ in range(2500))
    assert len(await store.load("wallet", "alice")) == 2500


async def test_pipeline_appends_in_order_and_dedupes(store: EventStore) -> None:
    events = [deposit("alice", 1, event_id=f"bulk-{i}") for i in range(300)]
    pipeline = Pipeline(store, window=128)
    seqs = await pipeline.append_all(Append(event=e) for e in events)
    assert seqs == list(range(1, 301))
    again = await pipeline.append_all(Append(event=e) for e in events[:50])
    assert again == list(range(1, 51))
    assert await store.last_seq() == 300


async def test_pipeline_surfaces_a_rejected_publish_instead_of_hanging(store: EventStore) -> None:
    await store.append(Append(event=deposit("alice", 1), expected=0))
    pipeline = Pipeline(store, window=8, ack_timeout=1.0)
    items = [Append(event=deposit("bob", 1)), Append(event=deposit("alice", 1), expected=0)]
    with pytest.raises(ConcurrencyConflict):
        await asyncio.wait_for(pipeline.append_all(items), 20)


async def test_an_old_event_in_the_log_still_loads(store: EventStore, nc: NATS) -> None:
    old = {
        "type": "FundsDeposited",
        "v": 0,
        "event_id": "old-1",
        "at": "2025-01-01T00:00:00Z",
        "cause": "c",
        "wallet_id": "alice",
        "udgpu": 7,
    }
    await nc.jetstream().publish(subject_of("wallet", "alice"), msgspec.json.encode(old))

    def v0_to_v1(raw: dict[str, object]) -> dict[str, object]:
        raw["amount"] = raw.pop("udgpu")
        return raw

    with registered("FundsDeposited", 0, v0_to_v1):
        (recorded,) = await store.load("wallet", "alice")
        replayed = [r.event async for r in store.read()]
    assert isinstance(recorded.event, ev.FundsDeposited) and recorded.event.amount == 7
    assert replayed == [recorded.event]


async def test_the_log_refuses_deletes_and_purges(store: EventStore, nc: NATS) -> None:
    await store.append(Append(event=provider_registered()))
    js = nc.jetstream()
    with pytest.raises(Exception, match="not permitted"):
        await js.purge_stream(STREAM)
    with pytest.raises(Exception, match=r"not permitted|denied"):
        await js.delete_msg(STREAM, 1)
    assert await store.last_seq() == 1


async def test_malformed_payload_in_the_log_raises_a_typed_error(
    store: EventStore, nc: NATS
) -> None:
    from dante.schemas.codec import DecodeError

    await nc.jetstream().publish(subject_of("job", "job-1"), b'{"type": "JobQueued"')
    with pytest.raises(DecodeError):
        await store.load("job", "job-1")


async def test_other_rejections_are_typed_and_append_nothing(store: EventStore) -> None:
    # nats-server caps an atomic batch at 1000 messages.
    items = [Append(event=deposit("alice", 1)) for _ in range(1001)]
    with pytest.raises(AppendRejected) as info:
        await store.append(*items)
    assert info.value.err_code != 0
    assert await store.last_seq() == 0
