"""Scheduling: from `SubmitJob` sent to `JobAssigned` appended, with 10,000 providers.

The log is seeded with providers of 1 to 8 GPUs of the models in bench/placement.py, at
their suggested prices, and funded renters; `dante up` runs in its own process, and every
provider heartbeats every 10 s (from this process) so none goes offline. Then:

- paced: renters submit jobs (1 or 2 GPUs, some asking for a model) at a steady rate; the
  time from sending each `SubmitJob` to its `JobAssigned` being appended (the server's
  timestamp of the message) gives p50 and p99, and the command's own reply time is reported
  beside the raw NATS request/reply round trip;
- burst: many jobs submitted at once (64 in flight); placements per second is jobs / time
  from the first send to the last assignment appended.

The simulated agents never start these jobs; the bench ends before they would time out.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from bench import raw
from bench.placement import FLEET
from bench.platform import (
    Fleet,
    Heartbeats,
    LogBuilder,
    Up,
    append_events,
    nats_server,
    owner_of,
    prime_durables,
    provider_id,
)
from bench.platform import server_url as url_of
from bench.report import Report, percentile
from dante.domain.pricing import suggest_price
from dante.events.store import EventStore
from dante.schemas import commands as cmd
from dante.schemas import events as ev
from dante.schemas.codec import decode_reply, encode
from dante.schemas.values import JobRequirements, ScriptPayload

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

    from bench.options import Options

_assigned = msgspec.json.Decoder(ev.JobAssigned)
RENTERS = 100


def fleet_events(providers: int, seed: int = 1) -> Iterator[ev.Event]:
    rng = random.Random(seed)
    builder = LogBuilder(datetime.now(UTC) - timedelta(hours=1))
    for n in range(providers):
        model, vram_mb, power_w = rng.choice(FLEET)
        price = suggest_price(model, (vram_mb + 512) // 1024, power_w).total
        yield builder.provider(n, rng.randint(1, 8), price, model, vram_mb)
    for n in range(RENTERS):
        yield builder.deposit(f"renter{n:04d}")


def _requirements(rng: random.Random) -> JobRequirements:
    roll = rng.random()
    if roll < 0.6:
        return JobRequirements(gpu_count=1)
    if roll < 0.8:
        return JobRequirements(gpu_count=2)
    return JobRequirements(gpu_count=1, gpu_model="RTX 4090")


class Submitter:
    def __init__(self, nc: NATS, start_seq: int) -> None:
        self.nc = nc
        self.start_seq = start_seq
        self.rng = random.Random(7)
        self.sent: dict[str, float] = {}  # job id -> wall time sent
        self.assigned: dict[str, float] = {}  # job id -> wall time appended
        self.replies: list[float] = []
        self.errors: dict[str, int] = {}
        self._arrived = asyncio.Event()

    async def submit(self) -> None:
        renter = f"renter{self.rng.randrange(RENTERS):04d}"
        command = cmd.SubmitJob(
            command_id=uuid.uuid4().hex,
            requirements=_requirements(self.rng),
            payload=ScriptPayload(script="print('bench')"),
        )
        sent = time.time()
        started = time.perf_counter()
        msg = await self.nc.request(
            f"dante.cmd.renter.{renter}.submit", encode(command), timeout=30
        )
        self.replies.append(time.perf_counter() - started)
        reply = decode_reply(msg.data)
        if not reply.ok:
            assert reply.error is not None
            self.errors[reply.error.code] = self.errors.get(reply.error.code, 0) + 1
            return
        job_id = msgspec.json.decode(reply.result)["job_id"]
        self.sent[job_id] = sent

    async def follow(self) -> None:
        store = EventStore(self.nc)
        async for chunk in store.read_chunks(
            self.start_seq, follow=True, subjects="dante.evt.job.>"
        ):
            for _, _, stored_at, data in chunk:
                if b'"JobAssigned"' in data and stored_at is not None:
                    self.assigned[_assigned.decode(data).job_id] = stored_at.timestamp()
            self._arrived.set()

    def latencies(self, job_ids: list[str]) -> list[float]:
        return [self.assigned[j] - self.sent[j] for j in job_ids if j in self.assigned]

    async def all_assigned(self, job_ids: list[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not all(j in self.assigned for j in job_ids):
            if time.monotonic() > deadline:
                return False
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), 1)
        return True

    async def paced(self, count: int, per_second: float) -> list[str]:
        before = set(self.sent)
        tasks = []
        started = time.monotonic()
        for n in range(count):
            delay = started + n / per_second - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.submit()))
        await asyncio.gather(*tasks)
        return [j for j in self.sent if j not in before]

    async def burst(self, count: int, in_flight: int) -> list[str]:
        before = set(self.sent)
        left = iter(range(count))

        async def worker() -> None:
            for _ in left:
                await self.submit()

        await asyncio.gather(*(worker() for _ in range(in_flight)))
        return [j for j in self.sent if j not in before]


async def run(options: Options) -> Report:
    providers = options.fleet or (2000 if options.quick else 10_000)
    paced_jobs = 100 if options.quick else 400
    burst_jobs = 200 if options.quick else 1000
    rate = 20.0
    report = Report(
        "scheduling",
        params={
            "providers": providers,
            "paced_jobs": paced_jobs,
            "paced_rate_per_s": rate,
            "burst_jobs": burst_jobs,
        },
    )
    with tempfile.TemporaryDirectory() as tmp:
        async with nats_server(Path(tmp) / "nats") as (nc, other):
            await raw.measure(report, nc, other, messages=10_000)
            fleet = Fleet(providers=[(owner_of(n), provider_id(n)) for n in range(providers)])
            fleet.last_seq = await append_events(nc, fleet_events(providers))
            await prime_durables(nc, fleet.last_seq)
            beats = Heartbeats(nc, fleet.providers)
            await beats.beat_all()
            async with Up(url_of(nc), Path(tmp) / "up") as up:
                report.add("platform start to ready", up.ready_s, "s")
                made = await up.dispatch_ready(nc, len(fleet.providers))
                report.add("dispatch consumers made after ready", made, "s")
                submitter = Submitter(nc, fleet.last_seq + 1)
                tasks = [
                    asyncio.create_task(beats.run()),
                    asyncio.create_task(submitter.follow()),
                ]
                try:
                    await _measure(report, submitter, up, paced_jobs, rate, burst_jobs)
                finally:
                    for task in tasks:
                        task.cancel()
                    for task in tasks:
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
                report.add("platform peak RSS", up.peak_rss_mb(), "MiB")
            if submitter.errors:
                report.notes.append(f"refused submissions: {submitter.errors}")
    return report


async def _measure(
    report: Report, submitter: Submitter, up: Up, paced_jobs: int, rate: float, burst_jobs: int
) -> None:
    await submitter.paced(10, 10)  # warm up: first placements build the market's caches
    await submitter.all_assigned(list(submitter.sent), 30)
    submitter.replies.clear()
    cpu0, wall0 = up.cpu_seconds(), time.perf_counter()
    jobs = await submitter.paced(paced_jobs, rate)
    await submitter.all_assigned(jobs, 60)
    cpu = (up.cpu_seconds() - cpu0) / (time.perf_counter() - wall0)
    lat = submitter.latencies(jobs)
    report.add("paced: submitted", rate, "jobs/s")
    report.add("paced: submit to assigned p50", percentile(lat, 50) * 1000, "ms")
    report.add("paced: submit to assigned p99", percentile(lat, 99) * 1000, "ms")
    report.add(
        "paced: SubmitJob reply p50",
        percentile(submitter.replies, 50) * 1000,
        "ms",
        vs="raw request/reply p50",
    )
    report.add(
        "paced: SubmitJob reply p99",
        percentile(submitter.replies, 99) * 1000,
        "ms",
        vs="raw request/reply p99",
    )
    report.add("paced: platform CPU", cpu * 100, "% of a core")
    if len(lat) < len(jobs):
        report.notes.append(f"paced: {len(jobs) - len(lat)} of {len(jobs)} not assigned in time")
    started = time.time()
    jobs = await submitter.burst(burst_jobs, 64)
    await submitter.all_assigned(jobs, 120)
    done = [submitter.assigned[j] for j in jobs if j in submitter.assigned]
    if done:
        report.add("burst: placements", len(done) / (max(done) - started), "jobs/s")
    lat = submitter.latencies(jobs)
    report.add("burst: submit to assigned p50", percentile(lat, 50) * 1000, "ms")
    report.add("burst: submit to assigned p99", percentile(lat, 99) * 1000, "ms")
