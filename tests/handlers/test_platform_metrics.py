"""The metrics of two platform processes on one log (the commands in one, the handlers and the
views in the other, as `dante up` runs them), here in one process: each has its registry,
and each reports what it does and what it can see when scraped from another thread."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import nats
import pytest
from nats.aio.client import Client as NATS
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dante.client.commands import Client
from dante.events.natsd import NatsServer
from dante.platform import Part, Platform, PlatformOptions
from dante.schemas import commands as cmd
from dante.schemas.views import Balance
from tests.handlers.conftest import Clock
from tests.handlers.harness import DGPU, Agent, deposit, submit

pytestmark = pytest.mark.anyio

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@asynccontextmanager
async def part(
    server: NatsServer, data_dir: Path, clock: Clock, *parts: Part
) -> AsyncIterator[tuple[Platform, CollectorRegistry]]:
    nc = await nats.connect(server.url)
    options = PlatformOptions(
        data_dir=data_dir, clock=clock, timer_interval=3600, parts=frozenset(parts), metrics=True
    )
    platform = Platform(nc, options)
    task = asyncio.create_task(platform.run())
    try:
        await asyncio.wait_for(platform.ready.wait(), 20)
        yield platform, platform.metrics_registry()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await nc.close()


async def scrape(registry: CollectorRegistry) -> Samples:
    # As prometheus_client's HTTP server does: from a thread of its own.
    text = (await anyio.to_thread.run_sync(generate_latest, registry)).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


async def test_each_process_reports_its_own_work_and_what_it_sees(
    nats_server: NatsServer, nc: NATS, tmp_path: Path, clock: Clock
) -> None:
    async with (
        part(nats_server, tmp_path, clock, "commands") as (_, front),
        part(nats_server, tmp_path, clock, "handlers", "views") as (handlers, back),
    ):
        assert front is not back
        bob = Agent(nc, "bob", "prv-a")
        await bob.register()
        await deposit(nc, "alice", 10 * DGPU)
        job_id = await submit(nc)
        await bob.beat(handlers, clock)
        await bob.start(job_id)
        clock.advance(15)
        await bob.tick(job_id)
        with pytest.raises(Exception, match="no job"):
            await Client(nc, "renter", "alice").send(cmd.GetJob(job_id="job-nowhere"))
        await handlers.settle()
        balance = await Client(nc, "renter", "alice").send(cmd.GetBalance(), Balance)
        assert balance.charged_udgpu > 0

        seen = await scrape(front)
        assert value(seen, "dante_commands_total", role="renter", verb="deposit", outcome="ok") == 1
        assert value(seen, "dante_commands_total", role="renter", verb="submit", outcome="ok") == 1
        assert (
            value(seen, "dante_commands_total", role="renter", verb="job", outcome="unknown_job")
            == 1
        )
        assert value(seen, "dante_charged_udgpu_total") == balance.charged_udgpu
        assert value(seen, "dante_jobs", state="running") == 1
        assert value(seen, "dante_gpus", state="busy") == 1
        # The handlers run elsewhere: their consumers say how far behind they are.
        for name in ("scheduler", "billing", "dispatcher", "liveness"):
            assert value(seen, "dante_handler_lag_events", handler=name) == 0
        assert value(seen, "dante_handler_decided_total", handler="billing") is None

        decided = await scrape(back)
        # The handlers' process decided; it answered no command.
        assert (
            value(decided, "dante_commands_total", role="renter", verb="deposit", outcome="ok")
            is None
        )
        for name in ("scheduler", "billing", "dispatcher"):
            count = value(decided, "dante_handler_decided_total", handler=name)
            assert count is not None and count >= 1, name
            assert value(decided, "dante_handler_lag_events", handler=name) == 0
        assert value(decided, "dante_views_lag_events") == 0
        appended = value(decided, "dante_appended_events_total")
        assert appended is not None and appended >= 3  # the assignment's batch, the charge
        assert value(decided, "dante_log_last_sequence") == await handlers.store.last_seq()


async def test_a_platform_without_metrics_has_none(nc: NATS, tmp_path: Path) -> None:
    platform = Platform(nc, PlatformOptions(data_dir=tmp_path))
    assert platform.metrics is None
    with pytest.raises(RuntimeError, match="without metrics"):
        platform.metrics_registry()
