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
from dante.schemas.money import cost, fee_of, format_dgpu
from dante.schemas.quotes import Quote
from dante.schemas.results import BudgetResult, JobResult, SubmitResult
from dante.schemas.values import JobRequirements, ScriptPayload
from dante.schemas.views import Balance
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


async def test_a_submission_sees_the_holds_the_scheduler_took_since(
    nc: NATS, platform: Platform, clock: Clock
) -> None:
    # The command service read alice's wallet for her first job; the scheduler then took
    # that job's hold, in a part of its own. A second job the rest cannot start is refused
    # at submission, not accepted to wait for funds.
    bob = Agent(nc, "bob", "prv-a")
    await bob.register(n=2)
    await deposit(nc, "alice", WINDOW + WINDOW // 2)
    await submit_job(nc)
    await platform.settle()
    assert platform.tail.world.wallet("alice").held == WINDOW
    before = await log_events(platform.store)
    with pytest.raises(CommandError) as raised:
        await submit_job(nc)
    assert raised.value.code == "insufficient_funds", raised.value.info
    assert f"only {format_dgpu(WINDOW // 2)} dGPU is available" in raised.value.info.message
    await platform.settle()
    assert await log_events(platform.store) == before
    assert_conserved(platform)


# ── low-funds warnings end with their attempt ───────────────────────────────────────────


async def renter(nc: NATS) -> Client:
    return Client(nc, "renter", "alice")


async def warned_with_its_hold_used_up(
    nc: NATS, platform: Platform, clock: Clock
) -> tuple[Agent, str]:
    """A running job whose hold could not be renewed (warned), then spent to the last µdGPU."""
    bob = Agent(nc, "bob", "prv-a")
    await bob.register()
    await deposit(nc, "alice", WINDOW)  # the first hold and nothing more
    job_id = (await submit_job(nc)).job_id
    await platform.settle()
    await bob.start(job_id)
    clock.advance(400)
    await bob.tick(job_id, ms=400_000)
    await platform.settle()
    clock.advance(200)
    await bob.tick(job_id, ms=200_000)  # 600 s: exactly the first hold's window
    await platform.settle()
    wallet = platform.tail.world.wallet("alice")
    assert wallet.holds == {} and list(wallet.warnings) == [(job_id, 1)]
    balance = await (await renter(nc)).send(cmd.GetBalance(), Balance)
    assert [w.job_id for w in balance.warnings] == [job_id]
    return bob, job_id


async def interrupted(agent: Agent, job_id: str) -> None:
    await agent.client.send(
        cmd.ReportJobFinished(
            command_id=new_command_id(),
            provider_id=agent.provider_id,
            job_id=job_id,
            attempt=1,
            error="the agent is shutting down",
            interrupted=True,
        )
    )


@pytest.mark.parametrize(
    "ending", ["completed", "failed", "cancelled", "stopped", "requeued", "lost"]
)
async def test_a_low_funds_warning_ends_with_its_attempt_however_it_ends(
    nc: NATS, platform: Platform, clock: Clock, ending: str
) -> None:
    bob, job_id = await warned_with_its_hold_used_up(nc, platform, clock)
    world = platform.tail.world
    if ending == "completed":
        await bob.finish(job_id)
    elif ending == "failed":
        await bob.finish(job_id, exit_code=1)
    elif ending == "cancelled":
        await (await renter(nc)).send(cmd.CancelJob(command_id=new_command_id(), job_id=job_id))
        await platform.settle()
        await bob.finish(job_id, exit_code=143)
    elif ending == "stopped":
        clock.advance(101)  # past the grace period (warned at 400 s, 300 s grace)
        await tick(platform, clock, bob)
    elif ending == "requeued":
        await interrupted(bob, job_id)
    else:  # the provider falls silent
        clock.advance(31)
        await tick(platform, clock)
    await platform.settle()
    job = world.job(job_id)
    expected = {
        "completed": "completed",
        "failed": "failed",
        "cancelled": "cancelled",
        "stopped": "stopped",
        "requeued": "assigned",  # placed again: the lost attempt's charges were refunded
        "lost": "queued",
    }[ending]
    assert job.status == expected
    assert world.wallet("alice").warnings == {}
    cleared = [e for e in await log_events(platform.store) if isinstance(e, ev.LowFundsCleared)]
    assert [(c.job_id, c.attempt) for c in cleared] == [(job_id, 1)]
    balance = await (await renter(nc)).send(cmd.GetBalance(), Balance)
    assert balance.warnings == []
    assert_conserved(platform)


# ── lost attempts and the stop grace ────────────────────────────────────────────────────


async def test_a_cancel_is_billed_up_to_it_plus_at_most_the_quoted_stop_grace(
    nc: NATS, platform: Platform, clock: Clock
) -> None:
    bob = Agent(nc, "bob", "prv-a")
    await bob.register()
    await deposit(nc, "alice", 10 * DGPU)
    quote = await Client(nc, "renter", "alice").send(
        cmd.QuoteJob(requirements=JobRequirements(gpu_count=1), duration_s=None), Quote
    )
    assert quote.stop_grace_s == 10
    job_id = (await submit_job(nc)).job_id
    await platform.settle()
    await bob.start(job_id)
    clock.advance(3)
    await bob.tick(job_id, ms=3_000)
    cancelled = await (await renter(nc)).send(
        cmd.CancelJob(command_id=new_command_id(), job_id=job_id), JobResult
    )
    assert (cancelled.state, cancelled.stop_grace_s) == ("running", 10)
    await platform.settle()
    # The job takes 20 s more to stop: only 10 of them are billed.
    clock.advance(20)
    await bob.tick(job_id, ms=20_000)
    await bob.finish(job_id, exit_code=143)
    await platform.settle()
    world = platform.tail.world
    assert world.job(job_id).status == "cancelled"
    charged = cost(PRICE, 13_000)
    assert world.wallet("alice").available == 10 * DGPU - charged
    charges = [e for e in await log_events(platform.store) if isinstance(e, ev.FundsCharged)]
    assert charges[-1].total_gpu_ms == 23_000 and charges[-1].billable_gpu_ms == 13_000
    assert sum(c.amount for c in charges) == charged
    assert world.wallet("bob").available == charged - fee_of(charged, 500)
    assert_conserved(platform)


async def test_a_job_that_gives_up_after_losing_every_attempt_costs_nothing(
    nc: NATS, platform: Platform, clock: Clock
) -> None:
    bob = Agent(nc, "bob", "prv-a")
    await bob.register()
    await deposit(nc, "alice", 10 * DGPU)
    job_id = (await submit_job(nc)).job_id
    await platform.settle()
    world = platform.tail.world
    for attempt in (1, 2, 3):
        assert world.job(job_id).attempt == attempt
        await bob.start(job_id, attempt)
        clock.advance(12)
        await bob.tick(job_id, attempt)
        await platform.settle()
        await bob.client.send(
            cmd.ReportJobFinished(
                command_id=new_command_id(),
                provider_id="prv-a",
                job_id=job_id,
                attempt=attempt,
                error="the agent is shutting down",
                interrupted=True,
            )
        )
        await platform.settle()
    job = world.job(job_id)
    assert (job.status, job.end_code) == ("failed", "failed")
    failed = [e for e in await log_events(platform.store) if isinstance(e, ev.JobFailed)]
    assert failed[-1].lost
    assert world.wallet("alice").available == 10 * DGPU
    assert world.wallet("alice").charged == 0
    assert (world.wallet("bob").available, world.wallet("platform").available) == (0, 0)
    assert_conserved(platform)


async def test_earnings_of_a_running_attempt_are_withdrawn_only_once_it_ends(
    nc: NATS, platform: Platform, clock: Clock
) -> None:
    bob = Agent(nc, "bob", "prv-a")
    await bob.register(price=100 * DGPU)  # 100 dGPU per GPU-hour
    await deposit(nc, "alice", 100 * DGPU)
    job_id = (await submit_job(nc, max_duration_s=3600)).job_id
    await platform.settle()
    await bob.start(job_id)
    clock.advance(600)
    await bob.tick(job_id, ms=600_000)
    await platform.settle()
    earned = cost(100 * DGPU, 600_000) - fee_of(cost(100 * DGPU, 600_000), 500)
    assert platform.tail.world.wallet("bob").available == earned > 10 * DGPU
    withdraw = cmd.Withdraw(command_id=new_command_id(), amount=10 * DGPU)
    with pytest.raises(CommandError) as raised:
        await bob.client.send(withdraw)
    assert raised.value.code == "insufficient_funds"
    assert "earned by jobs still running" in raised.value.info.message
    await bob.finish(job_id)
    await platform.settle()
    await bob.client.send(cmd.Withdraw(command_id=new_command_id(), amount=10 * DGPU))
    await platform.settle()
    # Held for its payout on chain (the settlement pays it; tests/handlers/test_settlement.py).
    wallet = platform.tail.world.wallet("bob")
    assert list(wallet.pending_withdrawals.values()) == [10 * DGPU]
    assert wallet.available == earned - 10 * DGPU
    assert_conserved(platform)


# ── budgets ─────────────────────────────────────────────────────────────────────────────

CAP = DGPU // 10  # 0.1 dGPU: more than one 10-minute hold (0.083333), less than two


async def set_budget(nc: NATS, **caps: object) -> BudgetResult:
    return await (await renter(nc)).send(
        cmd.SetBudget(command_id=new_command_id(), **caps),  # type: ignore[arg-type]
        BudgetResult,
    )


async def test_a_running_job_stops_when_the_day_s_budget_cannot_renew_its_hold(
    nc: NATS, platform: Platform, clock: Clock
) -> None:
    bob = Agent(nc, "bob", "prv-a")
    await bob.register()
    await deposit(nc, "alice", 10 * DGPU)  # plenty of money: only the budget is short
    budget = await set_budget(nc, daily=CAP)
    assert (budget.daily_udgpu, budget.monthly_udgpu, budget.spendable_udgpu) == (CAP, None, CAP)
    job_id = (await submit_job(nc)).job_id
    await platform.settle()
    await bob.start(job_id)
    clock.advance(400)
    await bob.tick(job_id, ms=400_000)
    await platform.settle()
    (warned,) = [e for e in await log_events(platform.store) if isinstance(e, ev.LowFundsWarned)]
    assert (warned.budget, warned.needed) == ("daily", WINDOW)
    assert warned.available == CAP - WINDOW  # spent 0.055555 + held 0.027778 of 0.1
    balance = await (await renter(nc)).send(cmd.GetBalance(), Balance)
    assert [(w.job_id, w.budget) for w in balance.warnings] == [(job_id, "daily")]
    clock.advance(301)
    await tick(platform, clock, bob)
    job = platform.tail.world.job(job_id)
    assert (job.status, job.end_code) == ("stopped", "budget_reached")
    assert "daily budget" in job.end_reason
    charged = sum(
        e.amount for e in await log_events(platform.store) if isinstance(e, ev.FundsCharged)
    )
    assert charged <= CAP
    assert platform.tail.world.wallet("alice").warnings == {}
    assert_conserved(platform)


async def test_raising_the_budget_renews_a_warned_hold(
    nc: NATS, platform: Platform, clock: Clock
) -> None:
    bob = Agent(nc, "bob", "prv-a")
    await bob.register()
    await deposit(nc, "alice", 10 * DGPU)
    await set_budget(nc, daily=CAP)
    job_id = (await submit_job(nc)).job_id
    await platform.settle()
    await bob.start(job_id)
    clock.advance(400)
    await bob.tick(job_id, ms=400_000)
    await platform.settle()
    world = platform.tail.world
    assert list(world.wallet("alice").warnings) == [(job_id, 1)]
    await set_budget(nc, daily=CAP, monthly=10 * DGPU)  # the monthly cap is not what binds
    await platform.settle()
    assert list(world.wallet("alice").warnings) == [(job_id, 1)]
    await set_budget(nc, daily=DGPU)
    await platform.settle()
    assert world.wallet("alice").warnings == {}
    assert world.wallet("alice").hold(job_id, 1) == 2 * WINDOW - cost(PRICE, 400_000)
    clock.advance(400)
    await tick(platform, clock, bob)
    assert world.job(job_id).status == "running"


async def test_a_job_bigger_than_the_cap_is_refused_and_one_over_today_s_rest_waits(
    nc: NATS, platform: Platform, clock: Clock
) -> None:
    bob = Agent(nc, "bob", "prv-a")
    await bob.register(n=2)
    await deposit(nc, "alice", 10 * DGPU)
    await set_budget(nc, daily=WINDOW - 1)
    before = await log_events(platform.store)
    with pytest.raises(CommandError) as raised:
        await submit_job(nc)
    assert raised.value.code == "budget_reached"
    assert "more than your whole daily budget" in raised.value.info.message
    await platform.settle()
    assert await log_events(platform.store) == before

    await set_budget(nc, daily=CAP)
    submitted = await submit_job(nc)
    assert (submitted.waits_for_budget, submitted.budget_room_at) == ("", None)
    first = submitted.job_id
    await platform.settle()
    await bob.start(first)
    clock.advance(400)
    await bob.tick(first, ms=400_000)
    await bob.finish(first)
    await platform.settle()
    # 0.055555 spent today: a second 0.083333 hold does not fit in what is left of 0.1.
    # The submission says so at once: nothing held until the day ends.
    waiting = await submit_job(nc)
    assert waiting.waits_for_budget == "daily"
    assert waiting.budget_room_at is not None
    assert f"{waiting.budget_room_at:%Y-%m-%d %H:%M}" == "2026-11-27 00:00"
    second = waiting.job_id
    await platform.settle()
    world = platform.tail.world
    job = world.job(second)
    assert (job.status, job.queue_code) == ("queued", "budget_reached")
    assert "waiting for the daily budget" in job.queue_reason
    assert "until 2026-11-27 00:00 UTC" in job.queue_reason
    # A new UTC day: the budget is whole again and the job is placed.
    clock.advance(12 * 3600 + 60)
    await tick(platform, clock, bob)
    assert world.job(second).status == "assigned"
    assert world.wallet("alice").spent(clock.now) == (0, cost(PRICE, 400_000))
    assert_conserved(platform)


async def test_budget_refuses_nonsense_and_clears(nc: NATS, platform: Platform) -> None:
    before = await log_events(platform.store)
    for caps, field in (({}, "daily"), ({"clear": True, "daily": 1}, "clear")):
        with pytest.raises(CommandError) as raised:
            await set_budget(nc, **caps)
        assert (raised.value.code, raised.value.info.field) == ("invalid", field)
    with pytest.raises(CommandError) as raised:
        await set_budget(nc, daily=2 * DGPU, monthly=DGPU)
    assert "above the monthly cap" in raised.value.info.message
    assert await log_events(platform.store) == before
    await set_budget(nc, daily=DGPU, monthly=5 * DGPU)
    kept = await set_budget(nc, daily=2 * DGPU)
    assert (kept.daily_udgpu, kept.monthly_udgpu) == (2 * DGPU, 5 * DGPU)
    cleared = await set_budget(nc, clear=True)
    assert (cleared.daily_udgpu, cleared.monthly_udgpu) == (None, None)
    await platform.settle()
    budgets = [e for e in await log_events(platform.store) if isinstance(e, ev.BudgetSet)]
    assert [(b.daily, b.monthly) for b in budgets] == [
        (DGPU, 5 * DGPU),
        (2 * DGPU, 5 * DGPU),
        (None, None),
    ]
