"""The full life of jobs through the real handlers and a real nats-server.

The agent is simulated by sending its commands; its instructions are read from the dispatch
stream. The clock is moved by hand and time-based decisions run with `platform.tick()`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client as NATS

from dante.events.store import EventStore
from dante.events.streams import DISPATCH_STREAM, heartbeat_key
from dante.handlers.client import Client, new_command_id
from dante.handlers.platform import Platform, PlatformOptions
from dante.handlers.settings import Settings
from dante.schemas import commands as cmd
from dante.schemas import dispatch
from dante.schemas import events as ev
from dante.schemas.money import cost, fee_of
from dante.schemas.results import SubmitResult
from dante.schemas.values import GpuOffer, GpuSample, JobRequirements, ScriptPayload, UsageTick
from tests.factories import SOLANA, gpu
from tests.handlers.conftest import Clock

pytestmark = pytest.mark.anyio

DGPU = 1_000_000
PRICE = 500_000  # 0.5 dGPU per GPU-hour
WINDOW = cost(PRICE, 600_000)  # the default 10-minute rolling hold for one GPU


@pytest.fixture
async def platform(nc: NATS, tmp_path: Path, clock: Clock) -> AsyncIterator[Platform]:
    options = PlatformOptions(
        data_dir=tmp_path, settings=Settings(), clock=clock, timer_interval=3600
    )
    plat = Platform(nc, options)
    task = asyncio.create_task(plat.run())
    await asyncio.wait_for(plat.ready.wait(), 20)
    try:
        yield plat
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


class Agent:
    """Sends what a provider's agent would send, for one provider."""

    def __init__(self, nc: NATS, owner: str, provider_id: str) -> None:
        self.nc = nc
        self.client = Client(nc, "provider", owner, timeout=5)
        self.owner = owner
        self.provider_id = provider_id
        self.ticks: dict[tuple[str, int], int] = {}

    async def beat(self, platform: Platform, clock: Clock) -> None:
        """Heartbeat now, and wait until liveness heard it."""
        kv = await self.nc.jetstream().key_value("dante_heartbeats")
        beat = dispatch.Heartbeat(provider_id=self.provider_id, owner=self.owner, at=clock.now)
        await kv.put(heartbeat_key(self.owner, self.provider_id), msgspec.json.encode(beat))
        for _ in range(200):
            if platform.liveness.last_seen.get(self.provider_id) == clock.now:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("liveness did not hear the heartbeat")

    async def register(self, n: int = 1, price: int = PRICE) -> None:
        await self.client.send(
            cmd.RegisterProvider(
                command_id=new_command_id(),
                provider_id=self.provider_id,
                name=self.provider_id,
                payout_address=SOLANA,
                gpus=[gpu(i) for i in range(n)],
                offers=[GpuOffer(index=i, price=price) for i in range(n)],
            )
        )

    async def instructions(self) -> list[dispatch.Instruction]:
        reader = EventStore(self.nc, stream=DISPATCH_STREAM)
        found = []
        async for _, _, data in reader._direct_batch(
            f"dante.agent.{self.owner}.{self.provider_id}.>", 1
        ):
            found.append(msgspec.json.decode(data, type=dispatch.Instruction))
        return found

    async def start(self, job_id: str, attempt: int = 1) -> None:
        ids: dict[str, Any] = {
            "provider_id": self.provider_id,
            "job_id": job_id,
            "attempt": attempt,
        }
        await self.client.send(cmd.AcceptAssignment(command_id=new_command_id(), **ids))
        await self.client.send(cmd.ReportJobStarted(command_id=new_command_id(), **ids))

    async def tick(self, job_id: str, attempt: int = 1, ms: int = 10_000, gpus: int = 1) -> None:
        from tests.factories import NOW

        seq = self.ticks.get((job_id, attempt), 0) + 1
        self.ticks[(job_id, attempt)] = seq
        tick = UsageTick(
            seq=seq, ended_at=NOW, samples=[GpuSample(index=i, gpu_ms=ms) for i in range(gpus)]
        )
        await self.client.send(
            cmd.RecordUsage(
                command_id=new_command_id(),
                provider_id=self.provider_id,
                job_id=job_id,
                attempt=attempt,
                ticks=[tick],
            )
        )

    async def finish(self, job_id: str, attempt: int = 1, exit_code: int = 0) -> None:
        await self.client.send(
            cmd.ReportJobFinished(
                command_id=new_command_id(),
                provider_id=self.provider_id,
                job_id=job_id,
                attempt=attempt,
                exit_code=exit_code,
            )
        )


async def submit(nc: NATS, renter: str = "alice", **req: Any) -> str:
    result = await Client(nc, "renter", renter).send(
        cmd.SubmitJob(
            command_id=new_command_id(),
            requirements=JobRequirements(**req),
            payload=ScriptPayload(script="print(1)"),
        ),
        SubmitResult,
    )
    return result.job_id


async def deposit(nc: NATS, renter: str, amount: int) -> None:
    await Client(nc, "renter", renter).send(cmd.Deposit(command_id=new_command_id(), amount=amount))


async def log_events(store: EventStore) -> list[ev.Event]:
    return [r.event async for r in store.read()]


async def tick(platform: Platform, clock: Clock, *alive: Agent) -> None:
    """Time-based decisions now, with these agents having just heartbeated."""
    for agent in alive:
        await agent.beat(platform, clock)
    await platform.tick()
    await platform.settle()


def assert_conserved(platform: Platform) -> None:
    world = platform.tail.world
    inside = sum(w.available + w.held + w.pending for w in world.wallets.values())
    outside = sum(w.deposited - w.withdrawn for w in world.wallets.values())
    assert inside == outside
    assert all(w.available >= 0 for w in world.wallets.values())


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
    assert warnings[0].stop_at == clock.now + __import__("datetime").timedelta(seconds=300)
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
    # The lost attempt's hold came back, less what its one recorded tick cost.
    assert world.wallet("alice").hold(job_id, 1) == 0
    await dear.start(job_id, attempt=2)
    clock.advance(12)
    await dear.tick(job_id, attempt=2)
    await dear.finish(job_id, attempt=2)
    await platform.settle()
    first, second = cost(PRICE, 10_000), cost(2 * PRICE, 10_000)
    assert world.job(job_id).status == "completed"
    assert world.wallet("alice").available == 10 * DGPU - first - second
    assert world.wallet("bob").available == first - fee_of(first, 500)
    assert world.wallet("carol").available == second - fee_of(second, 500)
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
            handler = runner.handler

            def again(r: Any = recorded, h: Any = handler) -> Any:
                return h.decide(world, r, clock())

            await runner.executor.carry_out(again)
    await platform.settle()
    assert await log_events(platform.store) == before
