"""Liveness judged against what the platform has heard: a platform behind on its heartbeats,
or one that was away itself (its server restarted), must not take live machines for dead
ones (and requeue their jobs)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS

from dante.domain.decision import Decision
from dante.events.natsd import NatsServer
from dante.events.subjects import heartbeat_key
from dante.platform import Platform
from dante.schemas import dispatch
from dante.schemas import events as ev
from tests.agent.daemon_helpers import history
from tests.handlers.conftest import Clock
from tests.handlers.harness import Agent, running_platform

pytestmark = pytest.mark.anyio

SILENCE = 30  # Settings().offline_after_s


@pytest.fixture
async def platform(nc: NATS, tmp_path: Path, clock: Clock) -> AsyncIterator[Platform]:
    async with running_platform(nc, tmp_path, clock) as plat:
        yield plat


async def put_beat(nc: NATS, agent: Agent, clock: Clock) -> int:
    """Write a heartbeat without waiting for the platform to hear it; its revision."""
    kv = await nc.jetstream().key_value("dante_heartbeats")
    beat = dispatch.Heartbeat(provider_id=agent.provider_id, owner=agent.owner, at=clock.now)
    return await kv.put(heartbeat_key(agent.owner, agent.provider_id), msgspec.json.encode(beat))


async def eventually(check: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def decide_now(platform: Platform) -> None:
    await platform.tick()
    await platform.settle()


async def test_a_quiet_platform_has_heard_everything(
    nc: NATS, platform: Platform, clock: Clock
) -> None:
    bob = Agent(nc, "bob", "prv-a")
    await bob.register()
    await bob.beat(platform, clock)

    caught_up = platform.liveness.caught_up
    assert caught_up is not None and caught_up()
    clock.advance(SILENCE + 1)
    await decide_now(platform)

    assert platform.tail.world.provider("prv-a").status == "offline"
    assert platform.liveness.heard_until == clock.now


async def test_a_backlog_of_heartbeats_delays_going_offline_instead_of_causing_it(
    nc: NATS, platform: Platform, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    bob = Agent(nc, "bob", "prv-a")
    await bob.register()
    await bob.beat(platform, clock)
    # The platform falls behind: handling a heartbeat now takes until the gate opens.
    gate = asyncio.Event()
    executor: Any = platform._heartbeats
    handle = executor.carry_out

    async def slow(decide: Callable[[], Iterator[Decision]]) -> Any:
        await gate.wait()
        return await handle(decide)

    monkeypatch.setattr(executor, "carry_out", slow)
    clock.advance(10)
    revision = await put_beat(nc, bob, clock)  # bob is alive; the platform has not read it
    caught_up = platform.liveness.caught_up
    assert caught_up is not None
    await eventually(lambda: not caught_up(), "the watcher to hold the heartbeat")

    clock.advance(SILENCE + 5)  # past the silence, counted from the last beat handled
    await decide_now(platform)
    assert platform.tail.world.provider("prv-a").status == "online"

    gate.set()
    await eventually(lambda: platform.liveness.handled >= revision, "the heartbeat")
    await eventually(caught_up, "the watcher to catch up")
    await decide_now(platform)
    assert platform.tail.world.provider("prv-a").status == "online"

    # Caught up, a real silence still counts.
    clock.advance(SILENCE + 1)
    await decide_now(platform)
    assert platform.tail.world.provider("prv-a").status == "offline"


async def test_without_a_watcher_nobody_goes_offline(
    nc: NATS, platform: Platform, clock: Clock
) -> None:
    """Until one catches up, no silence can be proven: a platform that just started (or
    whose watcher failed) waits rather than requeueing every job."""
    bob = Agent(nc, "bob", "prv-a")
    await bob.register()
    await bob.beat(platform, clock)
    platform.liveness.caught_up = lambda: False
    platform.liveness.heard_until = None

    clock.advance(SILENCE * 10)
    await decide_now(platform)

    assert platform.tail.world.provider("prv-a").status == "online"


async def test_after_the_server_restarted_machines_get_a_whole_silence_to_come_back(
    tmp_path: Path, clock: Clock
) -> None:
    """Issue 15: the platform's server stopped and started again (same port, same store).
    Nobody could heartbeat meanwhile, and agents need a moment to log in again: silence
    before the platform hears again does not count, and it hears again at once.

    Read from the log, not the platform's world: after a server restart nats-py's ordered
    consumers (the world's too) stay deaf for a while, and liveness appends regardless."""
    server = NatsServer(store_dir=tmp_path / "nats").start()
    server.port = server.client_port or -1  # the same port when it starts again
    nc = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)

    async def offline() -> list[tuple[str, datetime | None]]:
        return [
            (r.event.provider_id, r.event.last_seen)
            for r in await history(nc)
            if isinstance(r.event, ev.ProviderWentOffline)
        ]

    try:
        async with running_platform(nc, tmp_path / "platform", clock) as platform:
            liveness = platform.liveness
            bob = Agent(nc, "bob", "prv-b")  # its agent never comes back
            carol = Agent(nc, "carol", "prv-c")  # hers does
            for agent in (bob, carol):
                await agent.register()
                await agent.beat(platform, clock)
            beat_at = clock.now

            server.stop()
            await eventually(lambda: not nc.is_connected, "the platform to lose its server")
            server.start()
            await eventually(lambda: nc.is_connected, "the platform to reconnect")
            clock.advance(SILENCE + 1)  # by the platform's clock, the outage was long
            await platform.tick()
            assert await offline() == []

            # Carol's agent is back, and heard at once (nats-py's own watcher would stay
            # deaf for about 20 s): the platform hears again from now on.
            await beat_after_restart(nc, liveness, carol, clock)
            caught_up = liveness.caught_up
            assert caught_up is not None
            await eventually(caught_up, "the new watcher to catch up")
            assert liveness.grace_until == clock.now + timedelta(seconds=SILENCE)
            await platform.tick()
            assert await offline() == []

            clock.advance(SILENCE - 1)  # still within the grace
            await platform.tick()
            assert await offline() == []
            await carol.beat(platform, clock)

            clock.advance(2)  # the grace is over: a whole silence without bob
            await platform.tick()
            # Bob's last heartbeat is the one before the outage (the new watcher's first
            # values repeat it: not heard again).
            assert await offline() == [("prv-b", beat_at)]
    finally:
        await nc.close()
        server.stop()


async def beat_after_restart(nc: NATS, liveness: Any, agent: Agent, clock: Clock) -> None:
    """Heartbeat as soon as JetStream takes it again, and wait (10 s at most) until
    liveness has heard it."""
    deadline = asyncio.get_running_loop().time() + 10
    revision = None
    while revision is None:
        try:
            revision = await put_beat(nc, agent, clock)
        except Exception:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)
    while not (
        liveness.handled >= revision and liveness.last_seen.get(agent.provider_id) == clock.now
    ):
        assert asyncio.get_running_loop().time() < deadline, "the heartbeat was not heard"
        await asyncio.sleep(0.05)
