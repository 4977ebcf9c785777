"""Restart: `kill -9` of `dante up` at fleet size, and how soon the next start serves.

The log is seeded as the memory bench seeds it (10,000 providers, 100,000 jobs that ran,
were charged, completed and settled: 1.3 million events). `dante up` starts on it the first
time (its world and views folded from the whole log), saves a snapshot of its world once it
has caught up, and keeps its views' position in their file. Then 40,000 more events arrive
at 4,000 a second (the fleet's rate: 10,000 agents metering), during which it takes its
snapshots as it does (every 20,000 events, at most every 10 s); as the last lands, both of
its processes are killed with SIGKILL, as a crash would, and `dante up` starts again on the
same data folder:

- **ready**: from starting the process to its `ready` line (the commands answer, the
  handlers' world has reached the end of the log: snapshot plus what came after it);
- **caught up**: from `ready` until the views' stored position reaches the end of the log.

Baseline, in the same run: reading the whole log once with an ordered consumer (what a
start without a snapshot costs at least, before it decodes or applies anything).
`--fleet N` sets the providers (jobs: 10 per provider); `--quick` is 1,000 providers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.memory import job_events
from bench.platform import LogBuilder, Up, append_events, nats_server, prime_durables
from bench.platform import server_url as url_of
from bench.report import Report
from bench.scheduling import RENTERS, fleet_events
from dante.domain.model.snapshot import Reader
from dante.events.store import EventStore
from dante.handlers.snapshot import FILE_NAME

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

    from bench.options import Options
    from dante.schemas import events as ev

#: Events after the snapshot by default: as many as it lags behind at most at the fleet's
#: rate (10,000 agents: about 4,000 events/s; a snapshot at most every 10 s).
EXTRA = 40_000
RATE = 4_000


async def paced(nc: NATS, events: list[ev.Event], rate: float) -> int:
    """Append `events` at `rate` per second, a tenth of a second's worth at a time."""
    step = max(1, int(rate / 10))
    started = time.monotonic()
    last = 0
    for n in range(0, len(events), step):
        last = await append_events(nc, iter(events[n : n + step]))
        delay = started + (n + step) / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    return last


def snapshot_seq(data_dir: Path) -> int:
    """The position of the snapshot in the data folder (0: none yet)."""
    try:
        with (data_dir / FILE_NAME).open("rb") as file:
            return Reader(file.read).header.seq
    except (OSError, ValueError):
        return 0


async def wait_for_snapshot(data_dir: Path, seq: int, timeout: float = 900) -> float:
    started = time.monotonic()
    while snapshot_seq(data_dir) < seq:
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"no snapshot at {seq} in {data_dir}")
        await asyncio.sleep(0.2)
    return time.monotonic() - started


async def raw_read(nc: NATS) -> tuple[int, float]:
    """Every message of the log read once with an ordered consumer: (count, seconds)."""
    store = EventStore(nc)
    started = time.perf_counter()
    count = 0
    async for chunk in store.read_chunks(1):
        count += len(chunk)
    return count, time.perf_counter() - started


def kill_9(up: Up) -> None:
    """SIGKILL every process of the platform at once, as a crash would."""
    for pid in up.pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert up.process is not None
    up.process.wait()
    up.process = None


def logged(up: Up, event: str) -> dict[str, Any] | None:
    """The platform's last log line about `event` (its JSON lines), if any."""
    found = None
    for line in up.log_path.read_text(errors="replace").splitlines():
        if event in line and line.startswith("{"):
            with contextlib.suppress(ValueError):
                fields = json.loads(line)
                if fields.get("event") == event:
                    found = fields
    return found


async def run(options: Options) -> Report:
    providers = options.fleet or (1000 if options.quick else 10_000)
    jobs = providers * 10
    extra = EXTRA // 10 if options.quick else EXTRA
    report = Report("restart", params={"providers": providers, "jobs": jobs, "extra": extra})
    previous = os.environ.get("LOG_LEVEL")
    # The platform's info lines say how long loading the snapshot and catching up took.
    os.environ["LOG_LEVEL"] = "info"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            async with nats_server(Path(tmp) / "nats") as (nc, _):
                await measure(
                    report, nc, Path(tmp) / "up", providers=providers, jobs=jobs, extra=extra
                )
    finally:
        if previous is None:
            os.environ.pop("LOG_LEVEL", None)
        else:
            os.environ["LOG_LEVEL"] = previous
    return report


async def measure(
    report: Report, nc: NATS, data_dir: Path, *, providers: int, jobs: int, extra: int
) -> None:
    started = time.perf_counter()

    def events() -> Iterator[ev.Event]:
        yield from fleet_events(providers)
        yield from job_events(jobs, providers)

    seeded = await append_events(nc, events())
    await prime_durables(nc, seeded)
    report.add("events in the log", seeded, "events")
    report.add("seeding the log", time.perf_counter() - started, "s")

    up = Up(url_of(nc), data_dir)
    try:
        await up.start()
        report.add("first start (whole log): start to ready", up.ready_s, "s")
        snapshot = await wait_for_snapshot(data_dir, seeded)
        report.add("first start: snapshot saved after ready", snapshot, "s")
        views = await up.views_reach(seeded)
        report.add("first start: views caught up after ready", snapshot + views, "s")
        report.add("snapshot size", (data_dir / FILE_NAME).stat().st_size / 2**20, "MiB")

        # Events after the snapshot, then the crash.
        builder = LogBuilder(datetime.now(UTC), prefix="after")
        more = [builder.deposit(f"renter{n % RENTERS:04d}", 1) for n in range(extra)]
        last = await paced(nc, more, RATE)
        # Killed as soon as the last is in the log, as the events still arrive.
        behind = last - up.views_position()
        kill_9(up)
        report.add("events after the snapshot", last - snapshot_seq(data_dir), "events")
        report.add("views behind the log at the kill", behind, "events")

        count, seconds = await raw_read(nc)
        report.add("raw ordered-consumer read of the whole log", count / seconds, "events/s")
        report.add("raw ordered-consumer read of the whole log: time", seconds, "s")

        await up.start()
        report.add(
            "restart after kill -9: start to ready",
            up.ready_s,
            "s",
            vs="raw ordered-consumer read of the whole log: time",
        )
        caught_up = await up.views_reach(last)
        report.add(
            "restart: views caught up after ready",
            caught_up,
            "s",
            vs="raw ordered-consumer read of the whole log: time",
        )
        report.add(
            "restart: start to caught up",
            up.ready_s + caught_up,
            "s",
            vs="raw ordered-consumer read of the whole log: time",
        )
        loaded = logged(up, "world.snapshot_loaded")
        if loaded is None:
            report.notes.append("the restart did not use the snapshot (see the platform's log)")
        else:
            report.add("restart: snapshot loaded", loaded["seconds"], "s")
        world = logged(up, "world.caught_up")
        if world is not None:
            report.add(
                "restart: world caught up (snapshot and the log after it)", world["seconds"], "s"
            )
        report.add("restart: platform peak RSS", up.peak_rss_mb(), "MiB")
    finally:
        up.stop()
