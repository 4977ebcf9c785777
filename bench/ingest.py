"""Ingest: usage ticks per second end to end, against raw pipelined publishing.

A tick is one GPU's one-second usage sample (a `GpuSample` inside a `UsageTick`). An agent
sends a `RecordUsage` every 10 s with the 10 `UsageTick`s since the last one, each holding a
sample per GPU of the job: a 4-GPU job's command carries 40 ticks.

The log is seeded with a fleet (8-GPU providers, each running jobs of 4, 2, 1 and 1 GPUs,
started an hour ago), then `dante up` runs in its own process and this process plays the
agents. End to end means: the agent's command is accepted (`UsageRecorded` appended), billing
charges it (`FundsCharged`, `ProviderCredited`, `FeeCollected`), and the charge is visible in
the wallet projection (the views' stored position has passed the charge).

- saturation: agents send as fast as the platform answers (128 commands outstanding); the
  rate is ticks sent / time from the first send until the last charge is visible;
- paced: agents send at the real cadence of the fleet (every GPU one tick per second, in
  10-second batches), and the lag from a command's send to its charge being visible is
  reported (p50, p99).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from bench import raw
from bench.platform import Fleet, Heartbeats, RunningJob, Up, nats_server, plan_fleet, seed
from bench.platform import server_url as url_of
from bench.report import Report, own_cpu_seconds, percentile
from dante.events.store import EventStore
from dante.schemas import commands as cmd
from dante.schemas import events as ev
from dante.schemas.codec import decode_reply, encode
from dante.schemas.values import GpuSample, UsageTick

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

    from bench.options import Options

JOB_GPUS = [4, 2, 1, 1]
GPUS_PER_PROVIDER = 8
BATCH_S = 10
_charge = msgspec.json.Decoder(ev.FundsCharged)


@dataclass
class _Agent:
    """One running job as its agent meters it."""

    job: RunningJob
    subject: str
    next_seq: int = 1
    sent_ms: int = 0
    #: Commands whose charge has not been seen: (cumulative GPU-ms, sent at, ticks).
    unbilled: collections.deque[tuple[int, float, int]] = field(default_factory=collections.deque)


class Meter:
    """Plays the agents and follows their charges through the log and the views."""

    def __init__(self, nc: NATS, up: Up, fleet: Fleet) -> None:
        self.nc = nc
        self.up = up
        self.agents = {
            (job.job_id, job.attempt): _Agent(job, f"dante.cmd.provider.{job.owner}.usage")
            for job in fleet.running
        }
        self.start_seq = fleet.last_seq + 1
        #: Charges seen in the log, in log order: (seq, sent at, ticks), not yet visible.
        self.charged: collections.deque[tuple[int, float, int]] = collections.deque()
        self.sent_ticks = 0
        self.accepted_ticks = 0
        self.visible_ticks = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.lags: list[float] = []
        #: (when the charge became visible, its lag), for lag over time.
        self.samples: list[tuple[float, float]] = []
        #: From send to the charge appearing in the log (before the views have it).
        self.log_lags: list[float] = []
        #: (when, lag) of each stage, for where a growing lag builds up: the command's reply
        #: (accepted), the charge in the log.
        self.reply_samples: list[tuple[float, float]] = []
        self.log_samples: list[tuple[float, float]] = []
        self.last_visible = 0.0
        self.charges_seen = 0

    def command(self, agent: _Agent) -> tuple[bytes, int, int]:
        """The agent's next RecordUsage: BATCH_S ticks of every GPU of its job."""
        now = datetime.now(UTC)
        indices = agent.job.gpu_indices
        ticks = [
            UsageTick(
                seq=agent.next_seq + k,
                ended_at=now - timedelta(seconds=BATCH_S - k - 1),
                samples=[
                    GpuSample(index=i, gpu_ms=1000, utilization_pct=97, power_w=400)
                    for i in indices
                ],
            )
            for k in range(BATCH_S)
        ]
        command = cmd.RecordUsage(
            command_id=uuid.uuid4().hex,
            provider_id=agent.job.provider_id,
            job_id=agent.job.job_id,
            attempt=agent.job.attempt,
            ticks=ticks,
        )
        count = BATCH_S * len(indices)
        return encode(command), count, BATCH_S * 1000 * len(indices)

    async def send(self, agent: _Agent) -> None:
        payload, count, gpu_ms = self.command(agent)
        agent.next_seq += BATCH_S
        agent.sent_ms += gpu_ms
        sent = time.perf_counter()
        agent.unbilled.append((agent.sent_ms, sent, count))
        self.sent_ticks += count
        try:
            msg = await self.nc.request(agent.subject, payload, timeout=60)
        except Exception as exc:
            self.errors[type(exc).__name__] += 1
            return
        answered = time.perf_counter()
        self.reply_samples.append((answered, answered - sent))
        reply = decode_reply(msg.data)
        if reply.ok:
            self.accepted_ticks += count
        else:
            assert reply.error is not None
            self.errors[reply.error.code] += 1

    async def follow_charges(self) -> None:
        store = EventStore(self.nc)
        async for chunk in store.read_chunks(
            self.start_seq, follow=True, subjects="dante.evt.wallet.>"
        ):
            for seq, _, _, data in chunk:
                if b'"FundsCharged"' not in data:
                    continue
                charge = _charge.decode(data)
                agent = self.agents.get((charge.job_id, charge.attempt))
                if agent is None:
                    continue
                self.charges_seen += 1
                now = time.perf_counter()
                while agent.unbilled and agent.unbilled[0][0] <= charge.total_gpu_ms:
                    _, sent, count = agent.unbilled.popleft()
                    self.charged.append((seq, sent, count))
                    self.log_lags.append(now - sent)
                    self.log_samples.append((now, now - sent))

    async def watch_views(self) -> None:
        while True:
            position = await asyncio.to_thread(self.up.views_position)
            now = time.perf_counter()
            while self.charged and self.charged[0][0] <= position:
                _, sent, count = self.charged.popleft()
                self.lags.append(now - sent)
                self.samples.append((now, now - sent))
                self.visible_ticks += count
                self.last_visible = now
            await asyncio.sleep(0.01)

    async def drained(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.visible_ticks >= self.accepted_ticks:
                return True
            await asyncio.sleep(0.05)
        return False

    async def saturate(self, seconds: float, outstanding: int) -> None:
        ready = collections.deque(self.agents.values())
        stop = time.monotonic() + seconds

        async def worker() -> None:
            while time.monotonic() < stop and ready:
                agent = ready.popleft()
                await self.send(agent)
                ready.append(agent)

        await asyncio.gather(*(worker() for _ in range(outstanding)))

    async def paced(self, seconds: float, ticks_per_s: float) -> None:
        agents = list(self.agents.values())
        per_command = sum(BATCH_S * len(a.job.gpu_indices) for a in agents) / len(agents)
        interval = per_command / ticks_per_s
        busy: set[tuple[str, int]] = set()
        tasks: set[asyncio.Task[None]] = set()

        async def one(agent: _Agent) -> None:
            key = (agent.job.job_id, agent.job.attempt)
            busy.add(key)
            try:
                await self.send(agent)
            finally:
                busy.discard(key)

        started = time.monotonic()
        for n, agent in enumerate(itertools.cycle(agents)):
            due = started + n * interval
            if due - started >= seconds:
                break
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if (agent.job.job_id, agent.job.attempt) in busy:
                self.errors["skipped: previous command still in flight"] += 1
                continue
            task = asyncio.create_task(one(agent))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)

    def reset(self) -> None:
        self.sent_ticks = self.accepted_ticks = self.visible_ticks = 0
        self.lags = []
        self.log_lags = []


async def _phase(
    report: Report, meter: Meter, up: Up, name: str, run: asyncio.Future[None] | None = None
) -> tuple[float, float, float]:
    """Run a phase; return (ticks/s accepted, ticks/s visible end to end, platform CPU)."""
    meter.reset()
    own0 = own_cpu_seconds()
    cpu0 = up.cpu_seconds()
    started = time.perf_counter()
    assert run is not None
    await run
    accepted_s = time.perf_counter() - started
    await meter.drained(timeout=300)
    end_s = max(meter.last_visible - started, accepted_s)
    wall = time.perf_counter() - started
    cpu = (up.cpu_seconds() - cpu0) / wall
    report.add(
        f"{name}: this process (the agents) CPU",
        (own_cpu_seconds() - own0) / wall * 100,
        "% of a core",
    )
    return meter.accepted_ticks / accepted_s, meter.visible_ticks / end_s, cpu


async def run(options: Options) -> Report:
    gpus = options.fleet or (2000 if options.quick else 10_000)
    seconds = options.seconds or (10.0 if options.quick else 30.0)
    providers = max(1, gpus // GPUS_PER_PROVIDER)
    report = Report(
        "ingest",
        params={
            "gpus": providers * GPUS_PER_PROVIDER,
            "providers": providers,
            "job_gpus": JOB_GPUS,
            "ticks_per_command": f"{BATCH_S} x job GPUs",
            "seconds": seconds,
        },
    )
    with tempfile.TemporaryDirectory() as tmp:
        async with nats_server(Path(tmp) / "nats") as (nc, other):
            await raw.measure(report, nc, other, messages=20_000 if options.quick else 50_000)
            fleet, _ = plan_fleet(providers, GPUS_PER_PROVIDER, JOB_GPUS, renters=100)
            await seed(nc, fleet, gpus_per_provider=GPUS_PER_PROVIDER, started_ago_s=3600)
            beats = Heartbeats(nc, fleet.providers)
            async with Up(url_of(nc), Path(tmp) / "up") as up:
                report.add("platform start to ready", up.ready_s, "s")
                report.add("views caught up after ready", await up.views_reach(fleet.last_seq), "s")
                made = await up.dispatch_ready(nc, len(fleet.providers))
                report.add("dispatch consumers made after ready", made, "s")
                meter = Meter(nc, up, fleet)
                tasks = [
                    asyncio.create_task(beats.run()),
                    asyncio.create_task(meter.follow_charges()),
                    asyncio.create_task(meter.watch_views()),
                ]

                try:
                    await _measure(report, meter, up, seconds)
                finally:
                    for task in tasks:
                        task.cancel()
                    for task in tasks:
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
                report.add("platform peak RSS", up.peak_rss_mb(), "MiB")
    if meter.errors:
        report.notes.append(f"errors: {dict(meter.errors)}")
    return report


async def _measure(report: Report, meter: Meter, up: Up, seconds: float) -> None:
    pipelined = "raw publish, pipelined"
    accepted, e2e, cpu = await _phase(
        report, meter, up, "saturation", asyncio.ensure_future(meter.saturate(seconds, 128))
    )
    report.add("saturation: ticks accepted", accepted, "ticks/s", vs=pipelined)
    report.add("saturation: ticks charged, end to end", e2e, "ticks/s", vs=pipelined)
    report.add("saturation: lag p50", percentile(meter.lags, 50) * 1000, "ms")
    report.add("saturation: lag p99", percentile(meter.lags, 99) * 1000, "ms")
    report.add(
        "saturation: lag to the charge in the log, p50", percentile(meter.log_lags, 50) * 1000, "ms"
    )
    report.add("saturation: platform CPU", cpu * 100, "% of a core")
    fleet_rate = sum(len(a.job.gpu_indices) for a in meter.agents.values())
    rate = min(float(fleet_rate), 0.8 * e2e)
    accepted, e2e, cpu = await _phase(
        report, meter, up, "paced", asyncio.ensure_future(meter.paced(seconds, rate))
    )
    note = "the fleet's real rate" if rate == fleet_rate else "80% of saturation"
    report.add("paced: ticks offered", rate, "ticks/s", note=note)
    report.add("paced: ticks charged, end to end", e2e, "ticks/s", vs="paced: ticks offered")
    report.add("paced: lag p50", percentile(meter.lags, 50) * 1000, "ms")
    report.add("paced: lag p99", percentile(meter.lags, 99) * 1000, "ms")
    report.add(
        "paced: lag to the charge in the log, p50", percentile(meter.log_lags, 50) * 1000, "ms"
    )
    report.add("paced: platform CPU", cpu * 100, "% of a core")
