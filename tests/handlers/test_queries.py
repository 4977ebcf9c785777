"""Queries answered from the read models, only to their owners, reading one's own writes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError

from dante.client.commands import Client, CommandError
from dante.platform import Platform
from dante.schemas import commands as cmd
from dante.schemas.money import cost, fee_of
from dante.schemas.quotes import Quote
from dante.schemas.values import JobRequirements
from dante.schemas.views import Balance, JobView, LedgerEntry, OfferRow, PlatformSummary
from tests.handlers.conftest import Clock
from tests.handlers.harness import DGPU, PRICE, WINDOW, Agent, deposit, running_platform, submit

pytestmark = pytest.mark.anyio


@pytest.fixture
async def platform(nc: NATS, tmp_path: Path, clock: Clock) -> AsyncIterator[Platform]:
    async with running_platform(nc, tmp_path, clock) as plat:
        yield plat


async def test_balance_and_history_read_their_own_writes(nc: NATS, platform: Platform) -> None:
    alice = Client(nc, "renter", "alice")
    await deposit(nc, "alice", 7 * DGPU)
    # No settle: the query itself waits for the views to include the deposit.
    balance = await alice.send(cmd.GetBalance(), Balance)
    assert (balance.available_udgpu, balance.held_udgpu, balance.total_udgpu) == (
        7 * DGPU,
        0,
        7 * DGPU,
    )
    nobody = await Client(nc, "renter", "nobody").send(cmd.GetBalance(), Balance)
    assert nobody.total_udgpu == 0
    (entry,) = await alice.send(cmd.GetWalletHistory(), list[LedgerEntry])
    assert (entry.kind, entry.amount_udgpu, entry.available_delta_udgpu) == (
        "deposit",
        7 * DGPU,
        7 * DGPU,
    )


async def test_job_status_only_for_its_renter(nc: NATS, platform: Platform, clock: Clock) -> None:
    bob = Agent(nc, "bob", "prv-a")
    await bob.register()
    await deposit(nc, "alice", 10 * DGPU)
    job_id = await submit(nc)
    alice, eve = Client(nc, "renter", "alice"), Client(nc, "renter", "eve")
    view = await alice.send(cmd.GetJob(job_id=job_id), JobView)
    assert view.job_id == job_id and view.renter == "alice"
    await platform.settle()
    view = await alice.send(cmd.GetJob(job_id=job_id), JobView)
    assert (view.state, view.provider_id, view.attempts, view.price_udgpu) == (
        "assigned",
        "prv-a",
        1,
        PRICE,
    )
    with pytest.raises(CommandError) as error:
        await eve.send(cmd.GetJob(job_id=job_id), JobView)
    # Another account's job reads as one that does not exist: no answer says it is in use.
    assert error.value.code == "unknown_job"
    assert error.value.info.message == f"you have no job {job_id}"
    with pytest.raises(CommandError) as error:
        await alice.send(cmd.GetJob(job_id="job-none"), JobView)
    assert error.value.code == "unknown_job"
    mine = await alice.send(cmd.ListJobs(), list[JobView])
    assert [j.job_id for j in mine] == [job_id]
    assert await eve.send(cmd.ListJobs(), list[JobView]) == []
    assert await alice.send(cmd.ListJobs(state="completed"), list[JobView]) == []
    with pytest.raises(CommandError) as error:
        await alice.send(cmd.ListJobs(state="finished"), list[JobView])
    assert (error.value.code, error.value.info.field) == ("invalid", "state")
    balance = await alice.send(cmd.GetBalance(), Balance)
    assert balance.held_udgpu == WINDOW


async def test_offers_and_quotes(nc: NATS, platform: Platform) -> None:
    await Agent(nc, "bob", "prv-a").register(n=2, price=PRICE)
    await Agent(nc, "carol", "prv-b").register(n=4, price=2 * PRICE)
    await platform.settle()
    alice = Client(nc, "renter", "alice")
    offers = await alice.send(cmd.ListOffers(gpu_model="rtx4090"), list[OfferRow])
    assert [o.provider_id for o in offers] == ["prv-a", "prv-b"]
    offers = await alice.send(cmd.ListOffers(gpu_count=3), list[OfferRow])
    assert [o.provider_id for o in offers] == ["prv-b"]
    assert await alice.send(cmd.ListOffers(gpu_model="H100"), list[OfferRow]) == []
    offers = await alice.send(cmd.ListOffers(max_price=PRICE), list[OfferRow])
    assert [(o.provider_id, o.gpus_free, o.price_min_udgpu) for o in offers] == [
        ("prv-a", 2, PRICE)
    ]

    found = await alice.send(
        cmd.QuoteJob(requirements=JobRequirements(gpu_count=2), duration_s=7200), Quote
    )
    total = cost(2 * PRICE, 7_200_000)
    assert (found.provider_id, found.price, found.total) == ("prv-a", PRICE, total)
    assert found.fee == fee_of(total, 500) and found.fee + found.provider_share == total
    found = await alice.send(cmd.QuoteJob(requirements=JobRequirements(gpu_count=3)), Quote)
    assert (found.provider_id, found.price) == ("prv-b", 2 * PRICE)
    with pytest.raises(CommandError) as error:
        await alice.send(cmd.QuoteJob(requirements=JobRequirements(gpu_count=8)), Quote)
    assert error.value.code == "no_matching_offer"
    with pytest.raises(CommandError) as error:
        await alice.send(cmd.QuoteJob(requirements=JobRequirements(max_price=1)), Quote)
    assert error.value.code == "price_cap_too_low"


async def test_platform_status_is_for_the_operator(nc: NATS, platform: Platform) -> None:
    await Agent(nc, "bob", "prv-a").register(n=2)
    await deposit(nc, "alice", 10 * DGPU)
    await submit(nc)
    await platform.settle()
    summary = await Client(nc, "operator", "operator").send(
        cmd.GetPlatformStatus(), PlatformSummary
    )
    assert summary.providers == {"online": 1} and summary.jobs == {"assigned": 1}
    assert (summary.gpus_total, summary.gpus_busy, summary.gpus_free) == (2, 1, 1)
    # There is no renter verb for it at all: nothing answers a renter asking.
    with pytest.raises(NoRespondersError):
        await nc.request("dante.cmd.renter.alice.status", b"{}", timeout=2)
