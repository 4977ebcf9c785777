"""A platform in-process on a real nats-server, and an agent simulated by its commands."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
from nats.aio.client import Client as NATS

from dante.client.commands import Client, new_command_id
from dante.domain.settings import Settings
from dante.events.store import EventStore
from dante.events.subjects import DISPATCH_STREAM, heartbeat_key
from dante.platform import Platform, PlatformOptions
from dante.schemas import commands as cmd
from dante.schemas import dispatch
from dante.schemas import events as ev
from dante.schemas.money import cost
from dante.schemas.results import SubmitResult
from dante.schemas.values import GpuOffer, GpuSample, JobRequirements, ScriptPayload, UsageTick
from tests.factories import SOLANA, gpu
from tests.funding import fund_renter
from tests.handlers.conftest import Clock

DGPU = 1_000_000
PRICE = 500_000  # 0.5 dGPU per GPU-hour
WINDOW = cost(PRICE, 600_000)  # the default 10-minute rolling hold for one GPU


@asynccontextmanager
async def running_platform(nc: NATS, tmp_path: Path, clock: Clock) -> AsyncIterator[Platform]:
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
        with contextlib.suppress(asyncio.CancelledError):
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
        revision = await kv.put(
            heartbeat_key(self.owner, self.provider_id), msgspec.json.encode(beat)
        )
        for _ in range(200):
            # This very entry handled: last_seen may hold clock.now since the registration.
            if (
                platform.liveness.handled >= revision
                and platform.liveness.last_seen.get(self.provider_id) == clock.now
            ):
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
    """Pay `amount` into the renter's wallet through the platform's local chain."""
    await fund_renter(nc, renter, amount)


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
