"""Rebuilding from the log gives the live views, row for row, at any position."""

from __future__ import annotations

import itertools
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NATS

from dante.events.store import EventStore
from dante.projections import ProjectionRunner, Views, balance, rebuild
from dante.projections.sqlite import connect
from tests.factories import deposit, registered, submitted
from tests.projections.helpers import append_batches, dump_file, fresh_log
from tests.projections.histories import History, steps

pytestmark = pytest.mark.anyio

_examples = itertools.count()
PROPERTY = settings(
    max_examples=20,
    deadline=None,
    # One nats-server serves every example; each starts with a fresh log and its own files.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def workdir(tmp_path: Path) -> tuple[str, Path]:
    name = f"ex{next(_examples)}"
    path = tmp_path / name
    path.mkdir()
    return name, path


async def money_totals(db_path: Path) -> tuple[int, int]:
    """(what the wallets hold, what came in minus what went out), straight from the table."""
    db = await connect(db_path, readonly=True)
    try:
        async with db.execute(
            "SELECT sum(available_udgpu + held_udgpu + pending_withdrawal_udgpu), "
            "sum(deposited_udgpu - withdrawn_udgpu) FROM wallet_accounts"
        ) as cursor:
            row = await cursor.fetchone()
    finally:
        await db.close()
    assert row is not None
    return int(row[0] or 0), int(row[1] or 0)


@PROPERTY
@given(
    drawn=steps,
    stops=st.lists(st.tuples(st.integers(0, 10_000), st.booleans()), max_size=4),
    flush_every=st.integers(1, 40),
)
async def test_live_views_stopped_and_restarted_anywhere_equal_a_rebuild(
    nc: NATS,
    tmp_path: Path,
    drawn: list[tuple[str, int, int]],
    stops: list[tuple[int, bool]],
    flush_every: int,
) -> None:
    store = await fresh_log(nc)
    name, work = workdir(tmp_path)
    history = History(prefix=name).play(drawn)
    batches = history.batches
    # Where a runner stops, and whether it catches up first or is stopped wherever it is.
    plan = sorted({(cut % (len(batches) + 1), caught_up) for cut, caught_up in stops})
    plan.append((len(batches), True))
    live = work / "live.db"
    done = last = 0
    for bound, caught_up in plan:
        segment = batches[done:bound]
        half = len(segment) // 2
        last = await append_batches(store, segment[:half]) or last
        async with ProjectionRunner(store, live, flush_every=flush_every, flush_ms=1) as runner:
            # Half of the segment is caught up on, half is followed live.
            last = await append_batches(store, segment[half:]) or last
            if caught_up:
                await runner.wait_for(last, timeout=30)
            else:
                await anyio.sleep(0)
        done = max(done, bound)
    assert last == len(history.events)

    report = await rebuild(store, work / "rebuilt.db")
    assert (report.position, report.events) == (last, last)
    assert await dump_file(live) == await dump_file(work / "rebuilt.db")
    inside, outside = await money_totals(live)
    assert inside == outside


@PROPERTY
@given(drawn=steps, cut=st.integers(0, 10_000))
async def test_a_rebuild_to_a_sequence_or_a_time_equals_the_live_views_then(
    nc: NATS, tmp_path: Path, drawn: list[tuple[str, int, int]], cut: int
) -> None:
    store = await fresh_log(nc)
    name, work = workdir(tmp_path)
    history = History(prefix=name).play(drawn)
    events = history.events
    # Cut after every event that happened by the time of one of them: a decision's events
    # share their time, so this is always between two decisions.
    until = events[cut % len(events)].at
    head = [batch for batch in history.batches if batch[0].at <= until]
    seq = sum(len(batch) for batch in head)
    await append_batches(store, head)
    live = work / "live.db"
    async with ProjectionRunner(store, live) as runner:
        await runner.wait_for(seq, timeout=30)
    await append_batches(store, history.batches[len(head) :])

    by_seq = await rebuild(store, work / "by_seq.db", to_seq=seq)
    by_time = await rebuild(store, work / "by_time.db", until=until)
    assert by_seq.position == by_time.position == seq
    expected = await dump_file(live)
    assert await dump_file(work / "by_seq.db") == expected
    assert await dump_file(work / "by_time.db") == expected


async def test_rebuild_reports_progress_and_counts(store: EventStore, tmp_path: Path) -> None:
    last = await append_batches(
        store, [[deposit("alice", 1)], [registered(n=3)], [submitted()], [deposit("bob", 2)]]
    )
    seen: list[tuple[int, int]] = []
    report = await rebuild(
        store,
        tmp_path / "views.db",
        flush_every=2,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen == [(2, 4), (4, 4)]
    assert (report.position, report.events) == (last, 4)
    assert report.rows["registry_gpus"] == 3
    assert report.rows["wallet_accounts"] == 2
    assert report.rows["wallet_ledger"] == 2
    assert report.rows["job_records"] == 1
    assert not (tmp_path / "views.db.partial").exists()


async def test_rebuild_stops_at_the_end_of_the_log_and_an_empty_log_gives_empty_views(
    store: EventStore, tmp_path: Path
) -> None:
    empty = await rebuild(store, tmp_path / "empty.db")
    assert (empty.position, empty.events) == (0, 0)
    assert all(count == 0 for count in empty.rows.values())
    await append_batches(store, [[deposit("alice", 1)]])
    beyond = await rebuild(store, tmp_path / "beyond.db", to_seq=1000)
    assert (beyond.position, beyond.events) == (1, 1)


async def test_rebuild_never_overwrites_a_file_unless_asked(
    store: EventStore, tmp_path: Path
) -> None:
    await append_batches(store, [[deposit("alice", 1)]])
    target = tmp_path / "views.db"
    target.write_text("precious")
    with pytest.raises(FileExistsError):
        await rebuild(store, target)
    assert target.read_text() == "precious"
    await rebuild(store, target, replace=True)
    async with await Views.open(target) as views:
        assert (await balance(views, "alice")).available_udgpu == 1_000_000


async def test_a_runner_goes_on_from_a_rebuilt_file(store: EventStore, tmp_path: Path) -> None:
    await append_batches(store, [[deposit("alice", 1)], [deposit("alice", 2)]])
    target = tmp_path / "views.db"
    await rebuild(store, target, to_seq=1)
    last = await append_batches(store, [[deposit("alice", 4)]])
    async with ProjectionRunner(store, target) as runner, await Views.open(target) as views:
        assert runner.position == 1
        await runner.wait_for(last, timeout=10)
        assert (await balance(views, "alice")).available_udgpu == 7_000_000
