"""The platform's parts in two platforms on one log, as `dante up` runs them in two
processes: one answers the commands, the other decides (handlers) and keeps the views."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from dante.client.commands import Client, new_command_id
from dante.events.natsd import NatsServer
from dante.platform import Part, Platform, PlatformOptions
from dante.schemas import commands as cmd
from dante.schemas.money import cost, fee_of
from dante.schemas.views import Balance
from tests.factories import SOLANA
from tests.handlers.conftest import Clock
from tests.handlers.harness import DGPU, PRICE, WINDOW, Agent, deposit, log_events, submit

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def part(
    server: NatsServer, data_dir: Path, clock: Clock, *parts: Part
) -> AsyncIterator[Platform]:
    """A platform running only `parts`, on a connection of its own."""
    nc = await nats.connect(server.url)
    options = PlatformOptions(
        data_dir=data_dir, clock=clock, timer_interval=3600, parts=frozenset(parts)
    )
    platform = Platform(nc, options)
    task = asyncio.create_task(platform.run())
    try:
        await asyncio.wait_for(platform.ready.wait(), 20)
        yield platform
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await nc.close()


async def test_commands_and_handlers_in_two_platforms_on_one_log(
    nats_server: NatsServer, nc: NATS, tmp_path: Path, clock: Clock
) -> None:
    async with part(nats_server, tmp_path, clock, "commands") as commands:
        bob = Agent(nc, "bob", "prv-a")
        await bob.register()
        await deposit(nc, "alice", 10 * DGPU)
        job_id = await submit(nc)
        await commands.settle()
        kinds = [type(e).__name__ for e in await log_events(commands.store)]
        # Only commands so far: nothing decides without the handlers part.
        assert "JobAssigned" not in kinds and "FundsHeld" not in kinds
        assert commands.tail.world.position == 0  # the commands part keeps no world
        assert not (tmp_path / "views.sqlite3").exists()  # nor views

        async with part(nats_server, tmp_path, clock, "handlers", "views") as handlers:
            await handlers.settle()
            world = handlers.tail.world
            assert world.job(job_id).status == "assigned"
            assert world.wallet("alice").hold(job_id, 1) == WINDOW
            await bob.beat(handlers, clock)
            await bob.start(job_id)
            clock.advance(15)
            await bob.tick(job_id)
            await handlers.settle()
            charged = cost(PRICE, 10_000)
            assert world.wallet("bob").available == charged - fee_of(charged, 500)
            # The other process's views answer the queries, with the charge it made.
            balance = await Client(nc, "renter", "alice").send(cmd.GetBalance(), Balance)
            assert balance.charged_udgpu == charged
            assert balance.held_udgpu == WINDOW - charged
            await bob.finish(job_id)
            await handlers.settle()
            assert world.job(job_id).status == "completed"
            assert commands.stored_views is not None
            await commands.stored_views.wait_for(handlers.views.position, timeout=5)
            assert commands.stored_views.position == handlers.views.position


async def test_one_consumer_takes_over_where_the_per_handler_consumers_left_off(
    nats_server: NatsServer, nc: NATS, tmp_path: Path, clock: Clock
) -> None:
    """An installation from before the handlers shared one consumer: the shared one starts
    after what every old one had acknowledged, and the old ones are deleted."""
    js = nc.jetstream()
    async with part(nats_server, tmp_path, clock, "commands") as commands:
        await Agent(nc, "bob", "prv-a").register()
        await deposit(nc, "alice", 10 * DGPU)
        submitted_at = await commands.store.last_seq() + 1
        job_id = await submit(nc)
        last = await commands.store.last_seq()
        # Billing and the dispatcher had acted on everything, the scheduler not on the job.
        for name, start in (("scheduler", submitted_at), ("billing", last + 1)):
            await js.add_consumer(
                "DANTE",
                ConsumerConfig(
                    durable_name=f"handler-{name}",
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                    opt_start_seq=start,
                    filter_subject="dante.evt.>",
                ),
            )
        async with part(nats_server, tmp_path, clock, "handlers") as handlers:
            await handlers.settle()
            assert handlers.tail.world.job(job_id).status == "assigned"
            info = await js.consumer_info("DANTE", "handler-core")
            assert info.config.opt_start_seq == submitted_at
            names = {c.name for c in await js.consumers_info("DANTE")}
            assert "handler-scheduler" not in names and "handler-billing" not in names
        kinds = [type(e).__name__ for e in await log_events(commands.store)]
        assert kinds.count("JobAssigned") == 1 and kinds.count("FundsHeld") == 1


async def test_the_commands_part_holds_the_chain_and_pays_withdrawals(
    nats_server: NatsServer, nc: NATS, tmp_path: Path, clock: Clock
) -> None:
    """`dante up`'s own process (commands only) keeps the local chain: it follows the wallets
    and its settlement pays what is withdrawn, with no handlers in that process."""
    async with (
        part(nats_server, tmp_path, clock, "commands") as commands,
        part(nats_server, tmp_path / "other", clock, "handlers", "views") as handlers,
    ):
        assert handlers.chain is None  # the child never opens the chain
        bob = Agent(nc, "bob", "prv-a")
        await bob.register()
        await deposit(nc, "bob", 12 * DGPU)  # stands in for earnings
        await bob.client.ask(cmd.Withdraw(command_id=new_command_id(), amount=10 * DGPU))
        async with asyncio.timeout(20):
            while not [
                e for e in await log_events(commands.store) if type(e).__name__ == "FundsWithdrawn"
            ]:
                await asyncio.sleep(0.2)
        assert commands.chain is not None
        assert await commands.chain.token_balance(SOLANA) == 10 * DGPU
        assert commands.tail.world.position == 0  # it keeps no world of jobs
