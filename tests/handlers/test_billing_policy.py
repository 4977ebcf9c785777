"""Billing's rules for renters, through the real platform on a real nats-server.

What the quote at submission says is what is held; a low-funds warning ends with its attempt;
an attempt lost to the provider costs nothing; a cancel is charged at most the quoted stop
grace; account budgets cap what a renter spends per day and month.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from dante.client.commands import Client, CommandError, new_command_id
from dante.platform import Platform
from dante.schemas import commands as cmd
from dante.schemas import events as ev
from dante.schemas.results import SubmitResult
from dante.schemas.values import JobRequirements, ScriptPayload
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
    tick,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def platform(nc: NATS, tmp_path: Path, clock: Clock) -> AsyncIterator[Platform]:
    async with running_platform(nc, tmp_path, clock) as plat:
        yield plat


async def submit_job(nc: NATS, renter: str = "alice", **req: object) -> SubmitResult:
    return await Client(nc, "renter", renter).send(
        cmd.SubmitJob(
            command_id=new_command_id(),
            requirements=JobRequirements(**req),  # type: ignore[arg-type]
            payload=ScriptPayload(script="print(1)"),
        ),
        SubmitResult,
    )


async def offline_cheap_online_dear(
    nc: NATS, platform: Platform, clock: Clock
) -> tuple[Agent, Agent]:
    """prv-cheap (0.5 dGPU/h) has gone offline; prv-dear (1.0 dGPU/h) is online."""
    cheap, dear = Agent(nc, "bob", "prv-cheap"), Agent(nc, "carol", "prv-dear")
    await cheap.register(price=PRICE)
    await dear.register(price=2 * PRICE)
    clock.advance(31)
    await tick(platform, clock, dear)
    world = platform.tail.world
    assert world.provider("prv-cheap").status == "offline"
    assert world.provider("prv-dear").status == "online"
    return cheap, dear


# ── the quote at submission ─────────────────────────────────────────────────────────────


async def test_the_hold_quoted_at_submission_is_the_hold_taken_not_an_offline_offer(
    nc: NATS, platform: Platform, clock: Clock
) -> None:
    await offline_cheap_online_dear(nc, platform, clock)
    await deposit(nc, "alice", 10 * DGPU)
    result = await submit_job(nc)
    await platform.settle()
    held = [e for e in await log_events(platform.store) if isinstance(e, ev.FundsHeld)]
    assert [(h.job_id, h.amount) for h in held] == [(result.job_id, 2 * WINDOW)]
    assert (result.available_now, result.price_udgpu, result.first_hold_udgpu) == (
        True,
        2 * PRICE,
        2 * WINDOW,
    )
    assert platform.tail.world.job(result.job_id).provider_id == "prv-dear"
    # With a maximum duration the hold is the whole duration, at the same offer.
    second = await submit_job(nc, max_duration_s=1800, gpu_count=1)
    await platform.settle()
    # prv-dear's only GPU is taken: nothing fits now, the quote is the least it could hold.
    assert second.available_now is False
    assert platform.tail.world.job(second.job_id).status == "queued"


async def test_a_job_the_online_offer_cannot_be_held_for_is_refused_at_submission(
    nc: NATS, platform: Platform, clock: Clock
) -> None:
    await offline_cheap_online_dear(nc, platform, clock)
    # Enough for the offline offer's hold, not for the online one's.
    await deposit(nc, "alice", WINDOW)
    before = await log_events(platform.store)
    with pytest.raises(CommandError) as raised:
        await submit_job(nc)
    assert raised.value.code == "insufficient_funds"
    message = raised.value.info.message
    assert "provider prv-dear" in message and "0.166666 dGPU held" in message, message
    await platform.settle()
    assert await log_events(platform.store) == before
    assert_conserved(platform)
