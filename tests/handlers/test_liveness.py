"""Liveness judged against what the platform has heard: a platform behind on its heartbeats
must not take live machines for dead ones (and requeue their jobs)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client as NATS

from dante.events.streams import heartbeat_key
from dante.handlers.platform import Platform
from dante.handlers.runner import Step
from dante.schemas import dispatch
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

    async def slow(decide: Callable[[], Iterator[Step]]) -> Any:
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
