"""A platform to measure: a nats-server, a log seeded in bulk, `dante up` as a child process,
and simulated agents' heartbeats.

Seeding writes valid events straight to the log with `Pipeline` (the shapes the platform
itself appends), so a fleet of 10,000 providers with running jobs takes seconds rather than
the minutes its commands would. The handlers' durable consumers are then created at the end
of the seeded log, as a platform that had been running all along would have left them; the
world and the views are rebuilt from the log by `dante up` itself, as at any start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

import msgspec
import nats
from nats.aio.client import Client as NATS

from bench import report
from dante.events.natsd import NatsServer
from dante.events.pipeline import Pipeline
from dante.events.records import Append
from dante.events.store import EventStore
from dante.events.streams import ensure_log
from dante.events.subjects import DISPATCH_STREAM, HEARTBEAT_BUCKET, STREAM, heartbeat_key
from dante.schemas import events as ev
from dante.schemas.dispatch import Heartbeat
from dante.schemas.money import cost, fee_of
from dante.schemas.values import Gpu, GpuOffer, GpuSample, JobRequirements, ScriptPayload, UsageTick

SOLANA = "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin"
PRICE = 500_000  # µdGPU per GPU-hour
FEE_BPS = 500
HOLD_WINDOW_S = 600  # Settings.hold_window_s


FUNDS = 10**15


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def nats_server(store_dir: Path | None = None) -> AsyncIterator[tuple[NATS, NATS]]:
    """A fresh nats-server with Dante's log set up, and two connections to it."""
    with contextlib.ExitStack() as stack:
        if store_dir is None:
            store_dir = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "nats"
        server = stack.enter_context(NatsServer(store_dir=store_dir))
        nc = await nats.connect(server.url, name="bench")
        other = await nats.connect(server.url, name="bench-2")
        try:
            await ensure_log(nc.jetstream())
            yield nc, other
        finally:
            await other.close()
            await nc.close()


def server_url(nc: NATS) -> str:
    uri = nc.connected_url
    assert uri is not None
    return f"nats://{uri.hostname}:{uri.port}"


# ── seeding ─────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class RunningJob:
    job_id: str
    renter: str
    provider_id: str
    owner: str
    gpu_indices: tuple[int, ...]
    attempt: int = 1


@dataclass
class Fleet:
    """What a seeded log holds, for the load generator."""

    providers: list[tuple[str, str]] = field(default_factory=list)  # (owner, provider_id)
    running: list[RunningJob] = field(default_factory=list)
    renters: list[str] = field(default_factory=list)
    events: int = 0
    last_seq: int = 0


def provider_id(n: int) -> str:
    return f"p{n:05d}"


def owner_of(n: int) -> str:
    return f"own{n:05d}"


class LogBuilder:
    """Valid events in the order and shapes the platform appends them."""

    def __init__(self, at: datetime, prefix: str = "seed") -> None:
        self.at = at
        self._prefix = prefix
        self._n = 0

    def _meta(self, at: datetime | None = None) -> dict[str, Any]:
        self._n += 1
        return {"event_id": f"{self._prefix}-{self._n}", "at": at or self.at, "cause": "seed"}

    def provider(
        self,
        n: int,
        gpus: int,
        price: int = PRICE,
        model: str = "NVIDIA GeForce RTX 4090",
        vram_mb: int = 24_564,
    ) -> ev.Event:
        pid = provider_id(n)
        return ev.ProviderRegistered(
            **self._meta(),
            provider_id=pid,
            owner=owner_of(n),
            name=pid,
            payout_address=SOLANA,
            gpus=[
                Gpu(
                    index=i,
                    uuid=f"SIM-{pid}-{i}",
                    vendor="nvidia",
                    model=model,
                    vram_mb=vram_mb,
                    simulated=True,
                )
                for i in range(gpus)
            ],
            offers=[GpuOffer(index=i, price=price) for i in range(gpus)],
        )

    def deposit(self, wallet: str, amount: int = FUNDS) -> ev.Event:
        return ev.FundsDeposited(**self._meta(), wallet_id=wallet, amount=amount)

    def running_job(self, job: RunningJob, *, started: datetime) -> list[ev.Event]:
        """Submitted, placed (reserve, hold, assign), accepted and started at `started`."""
        count = len(job.gpu_indices)
        hold = cost(PRICE * count, HOLD_WINDOW_S * 1000)
        indices = list(job.gpu_indices)
        common: dict[str, Any] = {"job_id": job.job_id, "attempt": job.attempt}
        return [
            ev.JobSubmitted(
                **self._meta(started),
                job_id=job.job_id,
                renter=job.renter,
                requirements=JobRequirements(gpu_count=count),
                payload=ScriptPayload(script="print('bench')"),
            ),
            ev.GpusReserved(
                **self._meta(started), provider_id=job.provider_id, gpu_indices=indices, **common
            ),
            ev.FundsHeld(**self._meta(started), wallet_id=job.renter, amount=hold, **common),
            ev.JobAssigned(
                **self._meta(started),
                provider_id=job.provider_id,
                provider_owner=job.owner,
                gpu_indices=indices,
                price=PRICE,
                fee_bps=FEE_BPS,
                hold=hold,
                **common,
            ),
            ev.JobAccepted(**self._meta(started), **common),
            ev.JobStarted(**self._meta(started), **common),
        ]

    def finished_job(self, job: RunningJob, *, started: datetime, ticks: int) -> list[ev.Event]:
        """A job that ran `ticks` seconds on its GPUs, was charged, completed and settled."""
        events = self.running_job(job, started=started)
        hold = cost(PRICE * len(job.gpu_indices), HOLD_WINDOW_S * 1000)
        common: dict[str, Any] = {"job_id": job.job_id, "attempt": job.attempt}
        ended = started + timedelta(seconds=ticks)
        samples = [GpuSample(index=i, gpu_ms=ticks * 1000) for i in job.gpu_indices]
        events.append(
            ev.UsageRecorded(
                **self._meta(ended),
                **common,
                ticks=[UsageTick(seq=1, ended_at=ended, samples=samples)],
            )
        )
        gpu_ms = ticks * 1000 * len(job.gpu_indices)
        amount = cost(PRICE, gpu_ms)
        fee = fee_of(amount, FEE_BPS)
        charge = ev.FundsCharged(
            **self._meta(ended),
            wallet_id=job.renter,
            **common,
            amount=amount,
            usage_seq=0,
            total_gpu_ms=gpu_ms,
            price=PRICE,
            fee_bps=FEE_BPS,
            provider_wallet=job.owner,
        )
        events += [
            charge,
            ev.ProviderCredited(
                **self._meta(ended),
                wallet_id=job.owner,
                **common,
                amount=amount - fee,
                charge_id=charge.event_id,
            ),
            ev.FeeCollected(
                **self._meta(ended),
                wallet_id="platform",
                **common,
                amount=fee,
                charge_id=charge.event_id,
            ),
            ev.JobCompleted(**self._meta(ended), **common),
            ev.GpusReleased(
                **self._meta(ended),
                provider_id=job.provider_id,
                gpu_indices=list(job.gpu_indices),
                **common,
            ),
            ev.HoldReleased(
                **self._meta(ended), wallet_id=job.renter, amount=hold - amount, **common
            ),
        ]
        return events


def plan_fleet(
    providers: int,
    gpus_per_provider: int,
    job_gpus: list[int],
    renters: int,
    *,
    running: bool = True,
) -> tuple[Fleet, list[RunningJob]]:
    """Providers whose GPUs are split into jobs of `job_gpus` sizes (summing to at most
    `gpus_per_provider`), one job of each size per provider, renters taken in turn."""
    assert sum(job_gpus) <= gpus_per_provider
    fleet = Fleet(renters=[f"renter{n:04d}" for n in range(renters)])
    jobs: list[RunningJob] = []
    for n in range(providers):
        fleet.providers.append((owner_of(n), provider_id(n)))
        first = 0
        for k, size in enumerate(job_gpus):
            jobs.append(
                RunningJob(
                    job_id=f"job-{n:05d}-{k}",
                    renter=fleet.renters[len(jobs) % renters],
                    provider_id=provider_id(n),
                    owner=owner_of(n),
                    gpu_indices=tuple(range(first, first + size)),
                )
            )
            first += size
    if running:
        fleet.running = jobs
    return fleet, jobs


async def append_events(nc: NATS, events: Iterator[ev.Event]) -> int:
    """Append events in bulk; return the last sequence."""
    store = EventStore(nc)
    last = 0
    batch: list[Append] = []
    pipeline = Pipeline(store)
    for event in events:
        batch.append(Append(event=event))
        if len(batch) >= 20_000:
            last = (await pipeline.append_all(batch))[-1]
            batch = []
    if batch:
        last = (await pipeline.append_all(batch))[-1]
    return last


async def prime_durables(nc: NATS, last_seq: int) -> None:
    """Create the handlers' durable consumers at the end of the seeded log.

    As `HandlerRunner` makes them, except that they start after `last_seq`: the handlers of
    a platform that ran all along would have acted on every seeded event.
    """
    from dante.platform import Platform, PlatformOptions

    js = nc.jetstream()
    with tempfile.TemporaryDirectory() as unused:
        platform = Platform(nc, PlatformOptions(data_dir=Path(unused)))
    for runner in platform.runners:
        await js.add_consumer(STREAM, runner.consumer_config(start=last_seq + 1))


async def seed(
    nc: NATS,
    fleet: Fleet,
    *,
    gpus_per_provider: int,
    started_ago_s: float,
    finished: list[RunningJob] = (),  # type: ignore[assignment]
    finished_ticks: int = 600,
) -> None:
    """Append the fleet's providers, deposits and jobs, then prime the durables."""
    now = datetime.now(UTC)
    started = now - timedelta(seconds=started_ago_s)
    builder = LogBuilder(now - timedelta(seconds=started_ago_s + 3600))

    def events() -> Iterator[ev.Event]:
        for n in range(len(fleet.providers)):
            yield builder.provider(n, gpus_per_provider)
        for renter in fleet.renters:
            yield builder.deposit(renter)
        for job in finished:
            yield from builder.finished_job(
                job, started=started - timedelta(hours=2), ticks=finished_ticks
            )
        for job in fleet.running:
            yield from builder.running_job(job, started=started)

    count = 0

    def counted() -> Iterator[ev.Event]:
        nonlocal count
        for event in events():
            count += 1
            yield event

    fleet.last_seq = await append_events(nc, counted())
    fleet.events = count
    await prime_durables(nc, fleet.last_seq)


# ── heartbeats ──────────────────────────────────────────────────────────────────────────


class Heartbeats:
    """Every provider's agent heartbeating every `interval` seconds, spread evenly."""

    def __init__(self, nc: NATS, providers: list[tuple[str, str]], interval: float = 10.0) -> None:
        self._js = nc.jetstream(publish_async_max_pending=5000)
        self._providers = providers
        self._interval = interval
        self.sent = 0

    async def beat_all(self) -> None:
        """One heartbeat from every provider, as fast as it goes."""
        futures = [await self._put(owner, pid) for owner, pid in self._providers]
        await asyncio.gather(*futures)

    async def _put(self, owner: str, pid: str) -> asyncio.Future[Any]:
        beat = Heartbeat(provider_id=pid, owner=owner, at=datetime.now(UTC))
        self.sent += 1
        return await self._js.publish_async(
            f"$KV.{HEARTBEAT_BUCKET}.{heartbeat_key(owner, pid)}", msgspec.json.encode(beat)
        )

    async def run(self) -> None:
        count = len(self._providers)
        if not count:
            return
        step = self._interval / count
        started = time.monotonic()
        n = 0
        while True:
            owner, pid = self._providers[n % count]
            await self._put(owner, pid)
            n += 1
            delay = started + n * step - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)


# ── `dante up` as a child process ───────────────────────────────────────────────────────


class Up:
    """`dante up --nats-url …` in its own process, so its CPU and memory are its own."""

    def __init__(self, url: str, data_dir: Path) -> None:
        self.url = url
        self.data_dir = data_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "dante-up.log"
        self.ready_s = 0.0

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def pids(self) -> list[int]:
        """`dante up` and its child with the handlers and views (`dante serve`), if any."""
        found = [self.pid]
        for pid in report.children(self.pid):
            with contextlib.suppress(OSError):
                if b"\x00serve\x00" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(pid)
        return found

    def cpu_seconds(self) -> float:
        """CPU time the platform's processes have used so far."""
        total = 0.0
        for pid in self.pids:
            with contextlib.suppress(OSError):
                total += report.cpu_seconds(pid)
        return total

    def peak_rss_mb(self) -> float:
        """The platform's peak memory: the sum of its processes' peaks (an upper bound)."""
        return sum(report.rss_mb(pid)[1] for pid in self.pids)

    def rss_mb(self) -> float:
        return sum(report.rss_mb(pid)[0] for pid in self.pids)

    async def start(self, timeout: float = 600) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        out = self.log_path.open("wb")
        started = time.monotonic()
        # A child that outlives this bench's loop: Popen, then poll its log without blocking.
        self.process = subprocess.Popen(  # noqa: ASYNC220
            [
                sys.executable,
                "-m",
                "dante",
                "up",
                "--data-dir",
                str(self.data_dir),
                "--nats-url",
                self.url,
                # e.g. BENCH_UP_ARGS="--processes 1", to compare layouts in one run.
                *shlex.split(os.environ.get("BENCH_UP_ARGS", "")),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "LOG_LEVEL": os.environ.get("LOG_LEVEL", "warning"),
                # Where `dante up` saves the operator's credential: not the user's folder.
                "XDG_CONFIG_HOME": str(self.data_dir / "config"),
            },
        )
        out.close()
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError("dante up exited:\n" + self.log_path.read_text()[-4000:])
            if b"\nready" in b"\n" + self.log_path.read_bytes():
                self.ready_s = time.monotonic() - started
                return
            await asyncio.sleep(0.1)
        self.stop()
        raise RuntimeError("dante up did not become ready:\n" + self.log_path.read_text()[-4000:])

    def views_position(self) -> int:
        """The log position the platform's read models include (0 before they exist)."""
        path = self.data_dir / "views.sqlite3"
        if not path.exists():
            return 0
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
            try:
                row = db.execute("SELECT min(seq) FROM projection_positions").fetchone()
            finally:
                db.close()
        except sqlite3.Error:
            return 0
        return int(row[0] or 0)

    async def views_reach(self, seq: int, timeout: float = 900) -> float:
        """Wait until the views include `seq`; return how long it took."""
        started = time.monotonic()
        while self.views_position() < seq:
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"views stuck at {self.views_position()}, waiting for {seq}")
            await asyncio.sleep(0.1)
        return time.monotonic() - started

    async def dispatch_ready(self, nc: NATS, machines: int, timeout: float = 900) -> float:
        """Wait until the platform has made every machine's dispatch consumer (it does at
        every start, one JetStream request each); return how long that took."""
        started = time.monotonic()
        js = nc.jetstream()
        while (await js.stream_info(DISPATCH_STREAM)).state.consumer_count < machines:
            if time.monotonic() - started > timeout:
                raise TimeoutError("the platform did not make every dispatch consumer")
            await asyncio.sleep(0.2)
        return time.monotonic() - started

    def stop(self) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        keep = os.environ.get("BENCH_UP_LOG")  # where to keep the platform's log, if anywhere
        if keep and self.log_path.exists():
            shutil.copyfile(self.log_path, keep)
        return code

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()
