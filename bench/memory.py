"""Memory: `dante up` holding 10,000 providers and 100,000 jobs.

The log is seeded with 10,000 providers (1 to 8 GPUs) and 100,000 jobs that each ran,
were charged, completed and were settled (about 12 events each: 1.2 million events), then
`dante up` starts on it, folds its world and its views from the log as at any start, and
its peak resident memory (VmHWM) is read once the views have caught up. Start-up times are
reported too.

The agent's own memory (`dante agent run` while running a job) is measured once the agent
daemon exists; until then this bench says so.
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from bench.platform import (
    LogBuilder,
    RunningJob,
    Up,
    append_events,
    nats_server,
    owner_of,
    prime_durables,
    provider_id,
)
from bench.platform import server_url as url_of
from bench.report import Report
from bench.scheduling import RENTERS, fleet_events

if TYPE_CHECKING:
    from bench.options import Options
    from dante.schemas import events as ev


def job_events(jobs: int, providers: int) -> Iterator[ev.Event]:
    builder = LogBuilder(datetime.now(UTC) - timedelta(days=1), prefix="job")
    started = datetime.now(UTC) - timedelta(hours=20)
    for n in range(jobs):
        p = n % providers
        job = RunningJob(
            job_id=f"job-{n:07d}",
            renter=f"renter{n % RENTERS:04d}",
            provider_id=provider_id(p),
            owner=owner_of(p),
            gpu_indices=(0,),
        )
        yield from builder.finished_job(job, started=started, ticks=600)


async def run(options: Options) -> Report:
    providers = options.fleet or (1000 if options.quick else 10_000)
    jobs = providers * 10
    report = Report("memory", params={"providers": providers, "jobs": jobs})
    with tempfile.TemporaryDirectory() as tmp:
        async with nats_server(Path(tmp) / "nats") as (nc, _):
            started = time.perf_counter()

            def events() -> Iterator[ev.Event]:
                yield from fleet_events(providers)
                yield from job_events(jobs, providers)

            last = await append_events(nc, events())
            await prime_durables(nc, last)
            report.add("events in the log", last, "events")
            report.add("seeding the log", time.perf_counter() - started, "s")
            async with Up(url_of(nc), Path(tmp) / "up") as up:
                report.add("dante up: start to ready", up.ready_s, "s")
                report.add("views caught up after ready", await up.views_reach(last), "s")
                made = await up.dispatch_ready(nc, providers)
                report.add("dispatch consumers made after ready", made, "s")
                now, peak = up.rss_mb(), up.peak_rss_mb()
                report.add("dante up: RSS", now, "MiB")
                report.add("dante up: peak RSS", peak, "MiB")
    if importlib.util.find_spec("dante.agent.daemon") is None:
        report.notes.append("agent RSS: not measured, the agent daemon is not on this branch yet")
    return report
