"""The full life of jobs through the real handlers and a real nats-server.

The agent is simulated by sending its commands; its instructions are read from the dispatch
stream. The clock is moved by hand and time-based decisions run with `platform.tick()`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from dante.client.commands import Client, new_command_id
from dante.platform import Platform
from dante.schemas import commands as cmd
from dante.schemas import dispatch
from dante.schemas import events as ev
from dante.schemas.money import cost, fee_of
from tests.handlers.conftest import Clock
from tests.handlers.harness import (
    DGPU,
    PRICE,
    WINDOW,
    Agent,
    assert_conserved,
    deposit,
    log_events,
    running_platform,
    submit,
    tick,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def platform(nc: NATS, tmp_path: Path, clock: Clock) -> AsyncIterator[Platform]:
    async with running_platform(nc, tmp_path, clock) as plat:
        yield plat


async def test_submit_hold_assign_start_ticks_complete_release(
    nc: NATS, platform: Platform, clock: Clock
) -> None:
    bob = Agent(nc, "bob", "prv-a")
    await bob.register()
    await deposit(nc, "alice", 10 * DGPU)
    job_id = await submit(nc)
    await platform.settle()
    world = platform.tail.world
    job = world.job(job_id)
    assert (job.status, job.provider_id, job.gpu_indices, job.price) == (
        "assigned",
        "prv-a",
        (0,),
        PRICE,
    )
    assert world.wallet("alice").hold(job_id, 1) == WINDOW
    (assignment,) = await bob.instructions()
    assert isinstance(assignment, dispatch.Assignment)
    assert (assignment.job_id, assignment.attempt, assignment.gpu_indices) == (job_id, 1, [0])

    await bob.start(job_id)
    clock.advance(25)
    await bob.tick(job_id)
    await bob.tick(job_id)
    await platform.settle()
    charged = cost(PRICE, 20_000)
    fee = fee_of(charged, 500)
    assert world.wallet("alice").held == WINDOW - charged
    assert world.wallet("bob").available == charged - fee
    assert world.wallet("platform").available == fee

    await bob.finish(job_id)
    await platform.settle()
    assert world.job(job_id).status == "completed"
    assert world.wallet("alice").held == 0
    assert world.wallet("alice").available == 10 * DGPU - charged
    assert world.provider("prv-a").reservations == {}
    assert_conserved(platform)
    kinds = [type(e).__name__ for e in await log_events(platform.store)]
    assert kinds.count("FundsCharged") == 2 and kinds.count("HoldReleased") == 1
    assert kinds.count("GpusReleased") == 1


async def test_cancel_while_running_reaches_the_agent_and_releases(
    nc: NATS, platform: Platform, clock: Clock
) -> None:
    bob = Agent(nc, "bob", "prv-a")
    await bob.register()
    await deposit(nc, "alice", 10 * DGPU)
    job_id = await submit(nc)
    await platform.settle()
    await bob.start(job_id)
    clock.advance(12)
    await bob.tick(job_id)
    await Client(nc, "renter", "alice").send(
        cmd.CancelJob(command_id=new_command_id(), job_id=job_id)
    )
    await platform.settle()
    stop = (await bob.instructions())[-1]
    assert isinstance(stop, dispatch.Stop) and stop.code == "cancelled"
    await bob.finish(job_id, exit_code=143)
    await platform.settle()
    world = platform.tail.world
    assert world.job(job_id).status == "cancelled"
    assert world.wallet("alice").held == 0
    assert world.wallet("alice").available == 10 * DGPU - cost(PRICE, 10_000)
    assert_conserved(platform)


async def test_funds_run_out_warn_grace_stop(nc: NATS, platform: Platform, clock: Clock) -> None:
    bob = Agent(nc, "bob", "prv-a")
    await bob.register()
    await deposit(nc, "alice", WINDOW)  # exactly the first hold, nothing to renew with
    job_id = await submit(nc)
    await platform.settle()
    await bob.start(job_id)
    world = platform.tail.world
    # Use more than half of the window: the renewal fails, the renter is warned.
    clock.advance(400)
    await bob.tick(job_id, ms=400_000)
    await platform.settle()
    warnings = [e for e in await log_events(platform.store) if isinstance(e, ev.LowFundsWarned)]
    assert len(warnings) == 1 and warnings[0].needed == WINDOW
    assert warnings[0].stop_at == clock.now + timedelta(seconds=300)
    # Still within the grace period: nothing is stopped.
    clock.advance(200)
    await tick(platform, clock, bob)
    assert world.job(job_id).status == "running"
    clock.advance(101)
    await tick(platform, clock, bob)
    job = world.job(job_id)
    assert (job.status, job.end_code) == ("stopped", "insufficient_funds")
    stop = (await bob.instructions())[-1]
    assert isinstance(stop, dispatch.Stop) and stop.code == "insufficient_funds"
    # Usage after the stop is not recorded, so never charged.
    with pytest.raises(Exception, match="ended"):
        await bob.tick(job_id)
    assert world.wallet("alice").held == 0
    assert world.wallet("alice").available == WINDOW - cost(PRICE, 400_000)
    assert_conserved(platform)


async def test_a_deposit_during_the_grace_period_keeps_the_job_running(
    nc: NATS, platform: Platform, clock: Clock
) -> None:
    bob = Agent(nc, "bob", "prv-a")
    await bob.register()
    await deposit(nc, "alice", WINDOW)
    job_id = await submit(nc)
    await platform.settle()
    await bob.start(job_id)
    clock.advance(400)
    await bob.tick(job_id, ms=400_000)
    await platform.settle()
    await deposit(nc, "alice", 5 * DGPU)
    await platform.settle()
    world = platform.tail.world
    assert world.wallet("alice").warnings == {}
    assert world.wallet("alice").hold(job_id, 1) == 2 * WINDOW - cost(PRICE, 400_000)
    clock.advance(400)
    await tick(platform, clock, bob)
    assert world.job(job_id).status == "running"


async def test_provider_lost_requeue_elsewhere_lost_interval_not_charged(
    nc: NATS, platform: Platform, clock: Clock
) -> None:
    cheap, dear = Agent(nc, "bob", "prv-cheap"), Agent(nc, "carol", "prv-dear")
    await cheap.register(price=PRICE)
    await dear.register(price=2 * PRICE)
    await deposit(nc, "alice", 10 * DGPU)
    job_id = await submit(nc)
    await platform.settle()
    world = platform.tail.world
    assert world.job(job_id).provider_id == "prv-cheap"
    await cheap.start(job_id)
    clock.advance(12)
    await cheap.tick(job_id)
    await platform.settle()
    # prv-cheap falls silent while carol's agent keeps heartbeating.
    clock.advance(31)
    await tick(platform, clock, dear)
    job = world.job(job_id)
    assert world.provider("prv-cheap").status == "offline"
    assert world.provider("prv-dear").status == "online"
    assert (job.status, job.provider_id, job.attempt, job.price) == (
        "assigned",
        "prv-dear",
        2,
        2 * PRICE,
    )
    revoked = (await cheap.instructions())[-1]
    assert isinstance(revoked, dispatch.Stop) and revoked.code == "revoked"
    # The lost attempt's hold came back, and what its one recorded tick cost: an attempt
    # lost to its provider costs nothing (the job starts again from scratch).
    assert world.wallet("alice").hold(job_id, 1) == 0
    assert world.wallet("alice").available == 10 * DGPU - 2 * WINDOW
    assert world.wallet("bob").available == 0
    await dear.start(job_id, attempt=2)
    clock.advance(12)
    await dear.tick(job_id, attempt=2)
    await dear.finish(job_id, attempt=2)
    await platform.settle()
    first, second = cost(PRICE, 10_000), cost(2 * PRICE, 10_000)
    assert world.job(job_id).status == "completed"
    assert world.wallet("alice").available == 10 * DGPU - second
    assert (world.wallet("bob").available, world.wallet("bob").earned) == (0, 0)
    assert world.wallet("carol").available == second - fee_of(second, 500)
    refunds = [e for e in await log_events(platform.store) if isinstance(e, ev.ChargeRefunded)]
    assert [(r.job_id, r.attempt, r.amount) for r in refunds] == [(job_id, 1, first)]
    assert world.reliability_ppm("prv-cheap") == 0
    assert_conserved(platform)


async def test_many_jobs_at_once_never_share_a_gpu(
    nc: NATS, platform: Platform, clock: Clock
) -> None:
    bob = Agent(nc, "bob", "prv-a")
    await bob.register(n=4)
    await deposit(nc, "alice", 100 * DGPU)
    job_ids = await asyncio.gather(*(submit(nc) for _ in range(12)))
    await platform.settle()
    world = platform.tail.world
    running = [j for j in job_ids if world.job(j).status == "assigned"]
    assert len(running) == 4
    assert sorted(i for j in running for i in world.job(j).gpu_indices) == [0, 1, 2, 3]
    # Finish them one after another: each freed GPU goes to the next job in order.
    for _ in range(3):
        for job_id in [j for j in job_ids if world.job(j).status == "assigned"]:
            await bob.start(job_id, world.job(job_id).attempt)
            await bob.finish(job_id, world.job(job_id).attempt)
        await platform.settle()
    assert all(world.job(j).status == "completed" for j in job_ids)
    # No GPU was ever reserved while reserved.
    held: dict[int, str] = {}
    for event in await log_events(platform.store):
        if isinstance(event, ev.GpusReserved):
            for index in event.gpu_indices:
                assert index not in held, f"GPU {index} given to {event.job_id} and {held[index]}"
                held[index] = event.job_id
        elif isinstance(event, ev.GpusReleased):
            for index in event.gpu_indices:
                assert held.pop(index) == event.job_id
    assert_conserved(platform)


async def test_redelivered_events_change_nothing(
    nc: NATS, platform: Platform, clock: Clock, tmp_path: Path
) -> None:
    bob = Agent(nc, "bob", "prv-a")
    await bob.register()
    await deposit(nc, "alice", 10 * DGPU)
    job_id = await submit(nc)
    await platform.settle()
    await bob.start(job_id)
    clock.advance(25)
    await bob.tick(job_id)
    await bob.finish(job_id)
    await platform.settle()
    before = await log_events(platform.store)
    # Replay every trigger through every handler again, as a full redelivery would.
    world = platform.tail.world
    async for recorded in platform.store.read():
        for runner in platform.runners:
            for seat in runner.seats:

                def again(r: Any = recorded, h: Any = seat.handler) -> Any:
                    return h.decide(world, r, clock())

                await seat.executor.carry_out(again)
    await platform.settle()
    assert await log_events(platform.store) == before


async def test_an_agent_giving_an_attempt_back_requeues_it(
    nc: NATS, platform: Platform, clock: Clock
) -> None:
    bob = Agent(nc, "bob", "prv-a")
    await bob.register()
    await deposit(nc, "alice", 10 * DGPU)
    job_id = await submit(nc)
    await platform.settle()
    await bob.start(job_id)
    clock.advance(12)
    await bob.tick(job_id)
    await bob.client.send(
        cmd.ReportJobFinished(
            command_id=new_command_id(),
            provider_id="prv-a",
            job_id=job_id,
            attempt=1,
            error="the agent is shutting down",
            interrupted=True,
        )
    )
    await platform.settle()
    world = platform.tail.world
    job = world.job(job_id)
    # Placed again (the only provider is still there) as attempt 2; attempt 1 settled.
    assert (job.status, job.attempt) == ("assigned", 2)
    assert world.provider("prv-a").reservations[0].attempt == 2
    assert world.wallet("alice").hold(job_id, 1) == 0
    # Given back by the provider's agent: lost to the provider, so not charged.
    assert world.wallet("bob").available == 0
    assert world.wallet("alice").available == 10 * DGPU - WINDOW
    assert_conserved(platform)
