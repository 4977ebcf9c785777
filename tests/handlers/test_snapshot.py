"""Snapshots of the handlers' world: the world from a snapshot and the log after it is the
world from the whole log, and a snapshot that is missing, damaged, stale or another log's is
ignored (one log line) for the whole log."""

from __future__ import annotations

import os
import random
import stat
from collections.abc import MutableMapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NATS
from structlog.testing import capture_logs

from dante.client.commands import Client
from dante.domain.model import World
from dante.domain.model.snapshot import Capture, Header, Reader, SnapshotError, decode, encode
from dante.events.codec import Recorded
from dante.events.pipeline import Pipeline
from dante.events.records import Append
from dante.events.store import EventStore
from dante.events.streams import ensure_log
from dante.events.subjects import EVENT_PREFIX, STREAM, subject_of
from dante.handlers import snapshot as snapshots_module
from dante.handlers.runner import WorldTail
from dante.handlers.snapshot import Snapshots
from dante.schemas import commands as cmd
from dante.schemas import events as ev
from dante.schemas.values import GpuOffer
from tests.factories import SOLANA, gpu
from tests.handlers.conftest import Clock
from tests.handlers.harness import (
    DGPU,
    PRICE,
    Agent,
    assert_conserved,
    deposit,
    running_platform,
    submit,
)
from tests.projections.histories import ACTIONS, History

BUSY = (*ACTIONS, *["usage"] * 6, *["deposit"] * 2, "start", "assign", "assign")
_draw = st.tuples(st.sampled_from(BUSY), st.integers(0, 2**16), st.integers(0, 2**16))


def history(steps: int, seed: int, prefix: str = "s") -> list[ev.Event]:
    draw = random.Random(seed)
    drawn = [
        (draw.choice(BUSY), draw.randrange(2**16), draw.randrange(2**16)) for _ in range(steps)
    ]
    return History(prefix=prefix).play(drawn).events


def recorded(events: Sequence[ev.Event]) -> list[Recorded]:
    return [
        Recorded(seq=n, subject=subject_of(e.AGGREGATE, e.aggregate_id), stored_at=None, event=e)
        for n, e in enumerate(events, start=1)
    ]


def fold(records: Sequence[Recorded], world: World | None = None) -> World:
    world = world or World()
    for record in records:
        world.apply(record)
    return world


def header_of(world: World, **fields: Any) -> Header:
    facts: dict[str, Any] = {
        "fingerprint": "test",
        "stream": STREAM,
        "stream_created": "",
        "event_id": "",
        "at": datetime(2026, 12, 1, tzinfo=UTC),
    }
    return Capture(world).header(**(facts | fields))


def assert_same_world(got: World, want: World) -> None:
    """Every aggregate, book and index, in the same order, and the same market. Every
    attribute of the world is compared, so one a snapshot forgets fails here."""
    assert got.position == want.position
    ordered = ("providers", "jobs", "wallets", "books", "waiting", "completed", "lost")
    for name in ordered:
        assert list(getattr(got, name).items()) == list(getattr(want, name).items()), name
    assert set(vars(got)) == set(vars(want))
    for name, value in vars(want).items():
        if name not in (*ordered, "market", "causes", "_remember"):
            assert getattr(got, name) == value, name
    assert got.market.slots(got) == want.market.slots(want)
    assert got.market.by_price(got) == want.market.by_price(want)
    assert got.market.by_price(got, "RTX 4090") == want.market.by_price(want, "RTX 4090")


# ── the codec: world from a snapshot == world from the log ─────────────────────────────


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_draw, min_size=1, max_size=150), st.floats(0, 1))
def test_world_from_a_snapshot_and_the_rest_of_the_log_is_the_world_from_the_log(
    drawn: list[tuple[str, int, int]], cut: float
) -> None:
    records = recorded(History(prefix="p").play(drawn).events)
    whole = fold(records)
    at = int(len(records) * cut)
    before = fold(records[:at])
    header, restored = decode(encode(before, header_of(before)))
    assert header.seq == at
    assert_same_world(restored, before)
    assert_same_world(fold(records[at:], restored), whole)


def test_a_fleet_sized_history_survives_a_snapshot_in_small_frames() -> None:
    records = recorded(history(steps=3000, seed=3))
    whole = fold(records)
    assert len(whole.jobs) > 100 and whole.books and whole.waiting and whole.placed_on
    half = fold(records[: len(records) // 2])
    # Frames of 7 items: every list spans many frames.
    data = b"".join(Capture(half).frames(header_of(half), items=7))
    _, restored = decode(data)
    assert_same_world(fold(records[len(records) // 2 :], restored), whole)


def test_a_capture_holds_the_world_as_it_was_while_the_world_goes_on() -> None:
    records = recorded(history(steps=1500, seed=4))
    world = fold(records[:800])
    copy = fold(records[:800])
    capture = Capture(world)
    fold(records[800:], world)  # the world moves on before the capture is encoded
    _, restored = decode(b"".join(capture.frames(header_of(copy))))
    assert_same_world(restored, copy)


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda data: data[: len(data) // 2], "truncated"),
        (lambda data: data[:-3], "truncated"),
        (lambda data: data + b"x", "bytes after its end frame"),
        (lambda data: data[:5000] + bytes([data[5000] ^ 0x20]) + data[5001:], "damaged"),
        (lambda data: b"GARBAGE" + data[7:], "no magic line"),
    ],
)
def test_a_damaged_snapshot_does_not_restore(spoil: Any, message: str) -> None:
    world = fold(recorded(history(steps=400, seed=5)))
    data = encode(world, header_of(world))
    with pytest.raises(SnapshotError, match=message):
        decode(spoil(data))


# ── the file, checked against a real log ───────────────────────────────────────────────


async def append(store: EventStore, events: Sequence[ev.Event]) -> int:
    await Pipeline(store).append_all(Append(event=event) for event in events)
    return await store.last_seq()


async def world_from_log(store: EventStore) -> World:
    tail = WorldTail(store)
    await tail.catch_up()
    return tail.world


async def restart(store: EventStore, path: Path) -> tuple[WorldTail, Snapshots]:
    """A start as the platform's: the snapshot if it may be used, then the rest of the log."""
    snapshots = Snapshots(path, store, every_events=1, min_interval_s=0)
    tail = WorldTail(store, snapshots=snapshots)
    await tail.catch_up()
    return tail, snapshots


def events_logged(
    lines: list[MutableMapping[str, Any]], name: str
) -> list[MutableMapping[str, Any]]:
    return [line for line in lines if line["event"] == name]


@pytest.mark.anyio
async def test_a_start_from_a_snapshot_reads_only_the_log_after_it(
    store: EventStore, tmp_path: Path
) -> None:
    events = history(steps=2000, seed=6)
    await append(store, events[:1500])
    path = tmp_path / "world.snapshot"
    snapshots = Snapshots(path, store)
    first = WorldTail(store, snapshots=snapshots)
    await first.catch_up()
    assert await snapshots.save(first.world)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not await snapshots.save(first.world), "nothing new: no second snapshot"
    saved_at = first.world.position

    await append(store, events[1500:])
    with capture_logs() as lines:
        tail, again = await restart(store, path)
    assert again.loaded is not None and again.loaded.seq == saved_at
    [caught_up] = events_logged(lines, "world.caught_up")
    assert caught_up["snapshot"] == saved_at
    assert caught_up["events"] == await store.last_seq() - saved_at
    assert_same_world(tail.world, await world_from_log(store))


@pytest.mark.anyio
async def test_the_tail_saves_a_snapshot_once_the_world_moved_on_enough(
    store: EventStore, tmp_path: Path
) -> None:
    events = history(steps=600, seed=7)
    last = await append(store, events)
    path = tmp_path / "world.snapshot"
    tail, snapshots = await restart(store, path)
    # A start that folded many events saves one at once, off the loop.
    assert snapshots._task is not None
    await snapshots._task
    assert snapshots.saved_seq == last
    with path.open("rb") as file:
        header = Reader(file.read).header
    assert header.seq == last
    [found] = [m async for m in store.scan_raw(f"{EVENT_PREFIX}.>", last, limit=1)]
    assert header.event_id == found.headers["Nats-Msg-Id"]
    await snapshots.close(tail.world)


@pytest.mark.anyio
async def test_a_missing_snapshot_means_the_whole_log(store: EventStore, tmp_path: Path) -> None:
    await append(store, history(steps=300, seed=8))
    with capture_logs() as lines:
        tail, snapshots = await restart(store, tmp_path / "world.snapshot")
    assert snapshots.loaded is None
    assert [line["path"] for line in events_logged(lines, "world.no_snapshot")] == [
        str(tmp_path / "world.snapshot")
    ]
    assert_same_world(tail.world, await world_from_log(store))


async def saved(store: EventStore, path: Path) -> World:
    tail = WorldTail(store)
    await tail.catch_up()
    assert await Snapshots(path, store).save(tail.world)
    return tail.world


def spoil_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size - 10)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("spoil", "reason"),
    [(spoil_middle, "damaged"), (truncate, "truncated"), (lambda p: p.write_bytes(b""), "magic")],
)
async def test_a_damaged_snapshot_is_ignored_for_the_whole_log(
    store: EventStore, tmp_path: Path, spoil: Any, reason: str
) -> None:
    events = history(steps=800, seed=9)
    await append(store, events[:600])
    path = tmp_path / "world.snapshot"
    await saved(store, path)
    await append(store, events[600:])
    spoil(path)
    with capture_logs() as lines:
        tail, snapshots = await restart(store, path)
    assert snapshots.loaded is None
    [ignored] = events_logged(lines, "world.snapshot_ignored")
    assert reason in ignored["reason"] and ignored["path"] == str(path)
    assert ignored["log_level"] == "warning"
    assert_same_world(tail.world, await world_from_log(store))


@pytest.mark.anyio
async def test_a_snapshot_of_other_code_is_ignored(
    store: EventStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await append(store, history(steps=500, seed=10))
    path = tmp_path / "world.snapshot"
    await saved(store, path)
    # As if the code that folds the log changed since the snapshot was written.
    monkeypatch.setattr(snapshots_module, "fingerprint", lambda: "another version")
    with capture_logs() as lines:
        tail, snapshots = await restart(store, path)
    assert snapshots.loaded is None
    [ignored] = events_logged(lines, "world.snapshot_ignored")
    assert "written by other code" in ignored["reason"]
    assert_same_world(tail.world, await world_from_log(store))


def test_the_fingerprint_covers_the_code_that_folds_the_log() -> None:
    fingerprint = snapshots_module.fingerprint()
    assert len(fingerprint) == 32
    assert "dante.domain.model.world" in snapshots_module.FOLD_MODULES
    assert "dante.schemas.events" in snapshots_module.FOLD_MODULES


@pytest.mark.anyio
async def test_a_snapshot_of_a_stream_made_again_is_ignored(
    nc: NATS, store: EventStore, tmp_path: Path
) -> None:
    events = history(steps=500, seed=11)
    await append(store, events)
    path = tmp_path / "world.snapshot"
    await saved(store, path)
    # The log is deleted and made again, with the same events: the snapshot is not its.
    js = nc.jetstream()
    await js.delete_stream(STREAM)
    await ensure_log(js)
    await append(store, events[:300])
    with capture_logs() as lines:
        tail, snapshots = await restart(store, path)
    assert snapshots.loaded is None
    [ignored] = events_logged(lines, "world.snapshot_ignored")
    assert "another log" in ignored["reason"] or "beyond the end" in ignored["reason"]
    assert_same_world(tail.world, await world_from_log(store))


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"event_id": "someone-else"}, "of another log: its event at"),
        ({"stream_created": "2020-01-01T00:00:00+00:00"}, "its stream was made at"),
        ({"stream": "OTHER"}, "of stream OTHER"),
    ],
)
async def test_a_snapshot_of_another_log_is_ignored(
    store: EventStore, tmp_path: Path, fields: dict[str, Any], reason: str
) -> None:
    await append(store, history(steps=400, seed=12))
    world = await world_from_log(store)
    [at] = [m async for m in store.scan_raw(f"{EVENT_PREFIX}.>", world.position, limit=1)]
    info = await store.stream_info()
    assert info.created is not None
    facts: dict[str, Any] = {
        "fingerprint": snapshots_module.fingerprint(),
        "event_id": at.headers["Nats-Msg-Id"],
        "stream_created": info.created.isoformat(),
    }
    path = tmp_path / "world.snapshot"
    snapshots_module.write(path, Capture(world), header_of(world, **(facts | fields)))
    with capture_logs() as lines:
        tail, snapshots = await restart(store, path)
    assert snapshots.loaded is None
    [ignored] = events_logged(lines, "world.snapshot_ignored")
    assert reason in ignored["reason"]
    assert_same_world(tail.world, await world_from_log(store))


@pytest.mark.anyio
async def test_a_snapshot_beyond_the_end_of_the_log_is_ignored(
    store: EventStore, tmp_path: Path
) -> None:
    await append(store, history(steps=300, seed=13))
    world = await world_from_log(store)
    world.position += 1000
    path = tmp_path / "world.snapshot"
    snapshots_module.write(
        path, Capture(world), header_of(world, fingerprint=snapshots_module.fingerprint())
    )
    with capture_logs() as lines:
        _, snapshots = await restart(store, path)
    assert snapshots.loaded is None
    [ignored] = events_logged(lines, "world.snapshot_ignored")
    assert "beyond the end of the log" in ignored["reason"]


# ── the platform ───────────────────────────────────────────────────────────────────────


@pytest.mark.anyio
async def test_the_platform_saves_its_world_at_a_clean_stop_and_starts_from_it(
    nc: NATS, store: EventStore, tmp_path: Path, clock: Clock
) -> None:
    async with running_platform(nc, tmp_path, clock) as platform:
        bob = Agent(nc, "bob", "prv-a")
        await bob.register(2)
        await deposit(nc, "alice", 10 * DGPU)
        job_id = await submit(nc)
        await platform.settle()
        await bob.start(job_id)
        clock.advance(25)
        await bob.tick(job_id)
        await platform.settle()
        stopped_at = platform.tail.world.position
    path = tmp_path / "world.snapshot"
    assert path.exists() and stat.S_IMODE(path.stat().st_mode) == 0o600

    # Meanwhile another process appends: the next start reads only that from the log.
    landed = ev.FundsDeposited(
        event_id="dep-ann", at=clock.now, cause="test", wallet_id="ann", amount=DGPU
    )
    await store.append(Append(event=landed, expected=0))
    async with running_platform(nc, tmp_path, clock) as platform:
        assert platform.snapshots.loaded is not None
        assert platform.snapshots.loaded.seq == stopped_at
        assert platform.tail.world.wallet("ann").available == DGPU
        assert_same_world(platform.tail.world, await world_from_log(store))
        # It goes on deciding from there: usage after the restart is charged.
        await bob.tick(job_id)
        await platform.settle()
        assert_conserved(platform)
        assert platform.tail.world.books[(job_id, 1)].recorded_ms == 20_000
        assert platform.tail.world.books[(job_id, 1)].billed_ms == 20_000


@pytest.mark.anyio
async def test_the_command_service_takes_its_market_from_the_snapshot(
    nc: NATS, store: EventStore, tmp_path: Path, clock: Clock
) -> None:
    register = cmd.RegisterProvider(
        command_id="reg-once",
        provider_id="prv-a",
        name="prv-a",
        payout_address=SOLANA,
        gpus=[gpu(0), gpu(1)],
        offers=[GpuOffer(index=i, price=PRICE) for i in range(2)],
    )
    bob = Client(nc, "provider", "bob", timeout=5)
    async with running_platform(nc, tmp_path, clock) as platform:
        await bob.send(register)
        await Agent(nc, "carol", "prv-c").register(1)
        await platform.settle()
    async with running_platform(nc, tmp_path, clock) as platform:
        service = platform.service
        # Both providers come from the snapshot, as the handlers' world has them.
        assert service._unfolded == {"prv-a", "prv-c"}
        for pid in ("prv-a", "prv-c"):
            assert service.world.providers[pid] == platform.tail.world.providers[pid]
        assert [s.provider_id for s in service.world.market.slots(service.world)] == [
            "prv-a",
            "prv-c",
        ]
        before = await store.last_seq()
        # The same command again: the provider is folded from its events on first use,
        # causes included, so the retry is recognised and appends nothing.
        await bob.send(register)
        assert "prv-a" not in service._unfolded
        assert service.world.saw_cause("provider", "prv-a", "cmd:provider:bob:reg-once")
        assert service.world.providers["prv-a"] == platform.tail.world.providers["prv-a"]
        await platform.settle()
        assert await store.last_seq() == before


@pytest.mark.anyio
async def test_the_command_service_without_a_snapshot_reads_every_provider_event(
    nc: NATS, store: EventStore, tmp_path: Path, clock: Clock
) -> None:
    async with running_platform(nc, tmp_path, clock) as platform:
        await Agent(nc, "carol", "prv-c").register(1)
        await platform.settle()
    (tmp_path / "world.snapshot").unlink()
    async with running_platform(nc, tmp_path, clock) as platform:
        assert platform.service._unfolded == set()
        assert platform.service.world.provider("prv-c").online
        assert platform.snapshots.loaded is None
