"""Fleet: 10,000 simulated agents for minutes; does the platform keep up, in how much memory?

Each agent is a provider machine with one GPU running a one-GPU job (the most commands per
tick a fleet of that many GPUs can send). Every agent heartbeats every 10 s and sends a
`RecordUsage` with its last 10 ticks every 10 s, spread evenly, all from this one process:
10,000 GPUs metered per second, 1,000 commands and 1,000 heartbeats a second.

Reported per 10-second window: ticks charged and the lag from a command's send to its charge
being visible in the wallet projection. Keeping up means the lag of the last windows is no
larger than that of the first, and everything sent is charged. Peak memory of `dante up` and
of nats-server are read from /proc at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bench.ingest import Meter
from bench.platform import Heartbeats, Up, nats_server, plan_fleet, seed
from bench.platform import server_url as url_of
from bench.report import Report, cpu_seconds, own_cpu_seconds, percentile, rss_mb

if TYPE_CHECKING:
    from bench.options import Options

WINDOW_S = 10.0


def _nats_server_pid() -> int | None:
    """The bench's own nats-server: the child of this process."""
    import os

    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and b"nats-server" in cmdline:
            return int(entry.name)
    return None


async def run(options: Options) -> Report:
    agents = options.fleet or (1000 if options.quick else 10_000)
    seconds = options.seconds or (30.0 if options.quick else 180.0)
    report = Report(
        "fleet",
        params={"agents": agents, "gpus_per_agent": 1, "seconds": seconds, "every_s": 10},
    )
    with tempfile.TemporaryDirectory() as tmp:
        async with nats_server(Path(tmp) / "nats") as (nc, _):
            fleet, _ = plan_fleet(agents, 1, [1], renters=100)
            await seed(nc, fleet, gpus_per_provider=1, started_ago_s=3600)
            beats = Heartbeats(nc, fleet.providers, interval=10.0)
            await beats.beat_all()
            async with Up(url_of(nc), Path(tmp) / "up") as up:
                report.add("platform start to ready", up.ready_s, "s")
                await up.views_reach(fleet.last_seq)
                made = await up.dispatch_ready(nc, len(fleet.providers))
                report.add("dispatch consumers made after ready", made, "s")
                meter = Meter(nc, up, fleet)
                tasks = [
                    asyncio.create_task(beats.run()),
                    asyncio.create_task(meter.follow_charges()),
                    asyncio.create_task(meter.watch_views()),
                ]
                try:
                    await _measure(report, meter, up, agents, seconds)
                finally:
                    for task in tasks:
                        task.cancel()
                    for task in tasks:
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
                report.add("platform peak RSS", up.peak_rss_mb(), "MiB")
                server = _nats_server_pid()
                if server is not None:
                    report.add("nats-server peak RSS", rss_mb(server)[1], "MiB")
            report.add("heartbeats sent", beats.sent, "")
    if meter.errors:
        report.notes.append(f"errors: {dict(meter.errors)}")
    return report


async def _measure(report: Report, meter: Meter, up: Up, agents: int, seconds: float) -> None:
    server = _nats_server_pid()
    cpu0, own0 = up.cpu_seconds(), own_cpu_seconds()
    server0 = cpu_seconds(server) if server else 0.0
    started = time.perf_counter()
    await meter.paced(seconds, float(agents))  # every GPU: one tick a second
    drained = await meter.drained(timeout=120)
    wall = time.perf_counter() - started
    report.add("ticks offered", float(agents), "ticks/s")
    report.add("ticks charged", meter.visible_ticks / seconds, "ticks/s", vs="ticks offered")
    report.add("platform CPU", (up.cpu_seconds() - cpu0) / wall * 100, "% of a core")
    report.add(
        "this process (the agents) CPU", (own_cpu_seconds() - own0) / wall * 100, "% of a core"
    )
    if server:
        report.add("nats-server CPU", (cpu_seconds(server) - server0) / wall * 100, "% of a core")
    full = _windows(meter.samples, started, seconds)
    replies = _windows(meter.reply_samples, started, seconds)
    logged = _windows(meter.log_samples, started, seconds)
    for n, lags in enumerate(full):
        if not lags:
            continue
        report.add(f"window {n + 1}: lag p50", percentile(lags, 50) * 1000, "ms")
        report.add(f"window {n + 1}: lag p99", percentile(lags, 99) * 1000, "ms")
        # Where it builds up: the command's reply, the charge in the log, the views.
        if n < len(replies) and replies[n]:
            report.add(f"window {n + 1}: reply p50", percentile(replies[n], 50) * 1000, "ms")
        if n < len(logged) and logged[n]:
            report.add(f"window {n + 1}: charge in log p50", percentile(logged[n], 50) * 1000, "ms")
    seen = [lags for lags in full if lags]
    if len(seen) >= 2:
        first, last = percentile(seen[0], 50), percentile(seen[-1], 50)
        report.add("last / first window lag p50", last / first if first else 0.0, "x")
    report.add("all charged", 1.0 if drained else 0.0, "yes=1")


def _windows(
    samples: list[tuple[float, float]], started: float, seconds: float
) -> list[list[float]]:
    """The lags of `samples` ((when, lag)) per full WINDOW_S window from `started`."""
    windows: list[list[float]] = []
    for at, lag in samples:
        index = int((at - started) // WINDOW_S)
        while len(windows) <= index:
            windows.append([])
        windows[index].append(lag)
    return windows[: int(seconds // WINDOW_S)]
