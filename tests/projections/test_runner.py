"""The live runner against a real log: catching up, following, resuming, waiting for a write."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import anyio
import pytest
from nats.aio.client import Client as NATS

from dante.events.records import Append
from dante.events.store import EventStore
from dante.projections import (
    ProjectionError,
    ProjectionRunner,
    Views,
    balance,
    history,
    job,
    position,
)
from dante.projections.catalog import PROJECTIONS
from dante.projections.sqlite import connect, positions
from dante.schemas import events as ev
from tests.factories import deposit, make, registered, submitted
from tests.projections.helpers import dump_file, fresh_log

pytestmark = pytest.mark.anyio

DGPU = 1_000_000


async def append(store: EventStore, *events: ev.Event) -> int:
    last = 0
    for event in events:
        last = (await store.append(Append(event=event))).last
    return last


async def test_the_runner_catches_up_and_the_queries_see_the_views(
    store: EventStore, tmp_path: Path
) -> None:
    last = await append(store, deposit("alice", 10), registered(), submitted(), deposit("alice", 5))
    db = tmp_path / "views.db"
    async with ProjectionRunner(store, db) as runner:
        await runner.wait_for(last, timeout=10)
        assert runner.position == last == 4
        async with await Views.open(db) as views:
            assert (await balance(views, "alice")).available_udgpu == 15 * DGPU
            assert [e.seq for e in await history(views, "alice")] == [4, 1]
            found = await job(views, "job-1")
            assert found is not None
            assert found.state == "queued"
            assert await position(views) == 4


async def test_the_runner_follows_new_events_while_it_runs(
    store: EventStore, tmp_path: Path
) -> None:
    db = tmp_path / "views.db"
    async with ProjectionRunner(store, db, flush_ms=5_000) as runner, await Views.open(db) as views:
        assert runner.position == 0
        for n in range(1, 6):
            seq = await append(store, deposit("alice", 1))
            # A waiter gets its write at once, not after the flush interval.
            with anyio.fail_after(2):
                await runner.wait_for(seq)
            assert (await balance(views, "alice")).available_udgpu == n * DGPU


async def test_a_restarted_runner_resumes_after_its_position_and_applies_nothing_twice(
    store: EventStore, tmp_path: Path
) -> None:
    db = tmp_path / "views.db"
    first = await append(store, deposit("alice", 10), deposit("bob", 1))
    async with ProjectionRunner(store, db) as runner:
        await runner.wait_for(first, timeout=10)
    more = await append(store, deposit("alice", 2), deposit("alice", 3))
    async with ProjectionRunner(store, db) as runner:
        assert runner.position >= first
        await runner.wait_for(more, timeout=10)
        assert runner.position == more == 4
    # A third start with nothing new changes nothing either.
    before = await dump_file(db)
    async with ProjectionRunner(store, db) as runner:
        await runner.wait_for(more, timeout=10)
    assert await dump_file(db) == before
    async with await Views.open(db) as views:
        assert (await balance(views, "alice")).available_udgpu == 15 * DGPU
        assert [e.seq for e in await history(views, "alice", limit=10)] == [4, 3, 1]
    conn = await connect(db)
    try:
        assert await positions(conn) == {"registry": 4, "wallets": 4, "jobs": 4}
    finally:
        await conn.close()


async def test_wait_for_a_sequence_not_yet_in_the_log_times_out(
    store: EventStore, tmp_path: Path
) -> None:
    await append(store, deposit("alice", 1))
    async with ProjectionRunner(store, tmp_path / "views.db") as runner:
        await runner.wait_for(1, timeout=10)
        with pytest.raises(TimeoutError):
            await runner.wait_for(2, timeout=0.2)
        # Waiting for a sequence already included returns at once.
        await runner.wait_for(1, timeout=0)


async def test_wait_for_before_the_runner_started_waits_for_it(
    store: EventStore, tmp_path: Path
) -> None:
    seq = await append(store, deposit("alice", 1))
    runner = ProjectionRunner(store, tmp_path / "views.db")
    async with anyio.create_task_group() as tg:
        tg.start_soon(runner.wait_for, seq, 10)
        await anyio.sleep(0.05)
        await tg.start(runner.run)
        await runner.wait_for(seq, timeout=10)
        tg.cancel_scope.cancel()


async def test_a_changed_schema_rebuilds_only_that_projection_from_the_start(
    store: EventStore, tmp_path: Path
) -> None:
    db = tmp_path / "views.db"
    last = await append(store, deposit("alice", 10), registered(), submitted())
    async with ProjectionRunner(store, db) as runner:
        await runner.wait_for(last, timeout=10)
    before = await dump_file(db)
    # Pretend the jobs projection changed meaning, and leave garbage in one of its tables.
    conn = await connect(db)
    try:
        await conn.execute("UPDATE job_records SET state = 'garbage'")
        await conn.execute("CREATE TABLE job_old_leftover (x INTEGER)")
    finally:
        await conn.close()
    newer = tuple(
        dataclasses.replace(p, schema_version=p.schema_version + 1) if p.name == "jobs" else p
        for p in PROJECTIONS
    )
    async with ProjectionRunner(store, db, projections=newer) as runner:
        await runner.wait_for(last, timeout=10)
    after = await dump_file(db)
    assert "job_old_leftover" not in after
    assert after["job_records"] == before["job_records"]
    assert after["wallet_ledger"] == before["wallet_ledger"]
    versions = {row[0]: row[2] for row in after["projection_positions"]}
    assert versions == {"registry": 1, "wallets": 3, "jobs": 2}


async def test_a_decision_appended_as_one_batch_lands_in_one_view_update(
    store: EventStore, tmp_path: Path
) -> None:
    charge = make(
        ev.FundsCharged,
        wallet_id="alice",
        job_id="job-1",
        attempt=1,
        amount=1000,
        usage_seq=1,
        total_gpu_ms=1,
        price=1,
        fee_bps=500,
        provider_wallet="bob",
    )
    batch = [
        charge,
        make(
            ev.ProviderCredited,
            wallet_id="bob",
            job_id="job-1",
            attempt=1,
            amount=950,
            charge_id=charge.event_id,
        ),
        make(
            ev.FeeCollected,
            wallet_id="platform",
            job_id="job-1",
            attempt=1,
            amount=50,
            charge_id=charge.event_id,
        ),
    ]
    landed = await store.append(*(Append(event=e) for e in batch))
    db = tmp_path / "views.db"
    async with ProjectionRunner(store, db) as runner, await Views.open(db) as views:
        await runner.wait_for(landed.last, timeout=10)
        assert (await balance(views, "bob")).earned_udgpu == 950
        assert (await balance(views, "platform")).earned_udgpu == 50
        found = await job(views, "job-1")
        assert found is not None
        assert found.charged_udgpu == 1000


async def test_an_event_that_cannot_be_read_stops_the_runner_loudly(
    store: EventStore, nc: NATS, tmp_path: Path
) -> None:
    await append(store, deposit("alice", 1))
    await nc.jetstream().publish("dante.evt.wallet.alice", b'{"type": "FundsConjured"}')
    runner = ProjectionRunner(store, tmp_path / "views.db")
    with pytest.raises(ProjectionError, match="event 2 cannot be read"):
        await runner.run()
    # What came before it was applied and kept.
    async with await Views.open(tmp_path / "views.db") as views:
        assert await position(views) == 1


async def test_views_of_a_log_since_started_anew_start_over(
    store: EventStore, nc: NATS, tmp_path: Path
) -> None:
    db = tmp_path / "views.db"
    last = await append(store, deposit("alice", 1), deposit("alice", 2), deposit("alice", 3))
    async with ProjectionRunner(store, db) as runner:
        await runner.wait_for(last, timeout=10)
    # The log is deleted and started again: the file is ahead of it, so it belongs to the old.
    store = await fresh_log(nc)
    last = await append(store, deposit("bob", 7))
    async with ProjectionRunner(store, db) as runner, await Views.open(db) as views:
        await runner.wait_for(last, timeout=10)
        assert (await balance(views, "alice")).available_udgpu == 0
        assert (await balance(views, "bob")).available_udgpu == 7 * DGPU


async def test_without_waiters_changes_are_written_within_the_flush_interval(
    store: EventStore, tmp_path: Path
) -> None:
    db = tmp_path / "views.db"
    runner = ProjectionRunner(store, db, flush_every=1_000_000, flush_ms=30)
    async with runner, await Views.open(db) as views:
        last = await append(store, deposit("alice", 1), deposit("alice", 2))
        with anyio.fail_after(5):
            while await position(views) < last:
                await anyio.sleep(0.01)
        assert runner.position == last
        assert (await balance(views, "alice")).available_udgpu == 3 * DGPU


async def test_a_waiter_learns_when_the_runner_stops_before_its_sequence(
    store: EventStore, tmp_path: Path
) -> None:
    await append(store, deposit("alice", 1))
    failures: list[BaseException] = []

    async def wait(runner: ProjectionRunner) -> None:
        try:
            await runner.wait_for(99, timeout=10)
        except ProjectionError as exc:
            failures.append(exc)

    async with (
        anyio.create_task_group() as tg,
        ProjectionRunner(store, tmp_path / "views.db") as runner,
    ):
        await runner.wait_for(1, timeout=10)
        tg.start_soon(wait, runner)
        await anyio.sleep(0.05)
    assert [str(f) for f in failures] == ["the views stopped at 1, before 99"]
