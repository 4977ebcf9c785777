"""Raw baselines: what nats-py and SQLite do without Dante, on this machine, in this run.

- publish, awaited: JetStream publishes one at a time, each waiting for its acknowledgement;
- publish, pipelined: `publish_async` with up to 2000 acknowledgements outstanding;
- ordered-consumer read: the same messages streamed back with nats-py's ordered consumer and a
  callback (the fastest reader it has);
- atomic batch: three messages committed as one JetStream atomic batch, one at a time;
- request/reply: a plain NATS request to a responder that echoes, one at a time;
- SQLite upserts: `executemany` of an upsert in batches of 1000 rows, one transaction each.

Messages are a typical encoded `UsageRecorded` event (one tick of one GPU), published to a
scratch stream on the same server as everything else. Other benches call these functions so
that their ratios compare with a baseline measured minutes, not days, apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from nats.js.api import DeliverPolicy, StorageType, StreamConfig

from bench.report import Report, percentile
from dante.schemas import events as ev
from dante.schemas.codec import encode
from dante.schemas.values import GpuSample, UsageTick

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg

    from bench.options import Options

STREAM = "BENCH_RAW"
SUBJECT = "bench.raw"


def sample_payload() -> bytes:
    now = datetime.now(UTC)
    event = ev.UsageRecorded(
        event_id="cmd:provider:owner0001:0123456789abcdef0123456789abcdef:0",
        at=now,
        cause="cmd:provider:owner0001:0123456789abcdef0123456789abcdef",
        job_id="job-0123456789abcdef",
        attempt=1,
        ticks=[
            UsageTick(
                seq=1,
                ended_at=now,
                samples=[GpuSample(index=0, gpu_ms=1000, utilization_pct=97, power_w=400)],
            )
        ],
    )
    return encode(event)


async def _fresh_stream(nc: NATS) -> None:
    js = nc.jetstream()
    with contextlib.suppress(Exception):  # not there yet
        await js.delete_stream(STREAM)
    await js.add_stream(
        StreamConfig(
            name=STREAM, subjects=[f"{SUBJECT}.>"], storage=StorageType.FILE, allow_atomic=True
        )
    )


async def publish_awaited(nc: NATS, count: int) -> float:
    """Messages per second, each publish awaited."""
    await _fresh_stream(nc)
    js = nc.jetstream()
    payload = sample_payload()
    started = time.perf_counter()
    for n in range(count):
        await js.publish(f"{SUBJECT}.{n % 1000}", payload)
    return count / (time.perf_counter() - started)


async def publish_pipelined(nc: NATS, count: int, window: int = 2000) -> float:
    """Messages per second with `publish_async` (leaves `count` messages in the stream)."""
    await _fresh_stream(nc)
    js = nc.jetstream(publish_async_max_pending=window)
    payload = sample_payload()
    started = time.perf_counter()
    futures = [await js.publish_async(f"{SUBJECT}.{n % 1000}", payload) for n in range(count)]
    await asyncio.gather(*futures)
    return count / (time.perf_counter() - started)


async def ordered_read(nc: NATS, count: int) -> float:
    """Messages per second read back from the scratch stream by an ordered consumer."""
    js = nc.jetstream()
    done = asyncio.Event()
    seen = 0

    async def on_msg(msg: Msg) -> None:
        nonlocal seen
        seen += 1
        del msg
        if seen >= count:
            done.set()

    started = time.perf_counter()
    sub = await js.subscribe(
        f"{SUBJECT}.>",
        stream=STREAM,
        ordered_consumer=True,
        cb=on_msg,
        deliver_policy=DeliverPolicy.ALL,
        pending_msgs_limit=200_000,
        pending_bytes_limit=256 * 1024 * 1024,
    )
    await done.wait()
    seconds = time.perf_counter() - started
    await sub.unsubscribe()
    return count / seconds


async def atomic_batches(nc: NATS, count: int, size: int = 3) -> list[float]:
    """Seconds each atomic batch of `size` messages takes to commit, one after another.

    Every decision Dante appends to several aggregates (a placement, a charge) is one; on a
    file stream nats-server syncs each to disk before it acknowledges the commit.
    """
    await _fresh_stream(nc)
    payload = sample_payload()
    times = []
    for n in range(count):
        batch = f"raw-{n}"
        started = time.perf_counter()
        for k in range(1, size + 1):
            headers = {"Nats-Batch-Id": batch, "Nats-Batch-Sequence": str(k)}
            if k < size:
                await nc.publish(f"{SUBJECT}.{k}", payload, headers=headers)
            else:
                headers["Nats-Batch-Commit"] = "1"
                await nc.request(f"{SUBJECT}.{k}", payload, headers=headers, timeout=10)
        times.append(time.perf_counter() - started)
    return times


async def request_reply(nc: NATS, responder: NATS, count: int) -> list[float]:
    """Round trips of plain NATS requests to an echoing responder, in seconds."""

    async def echo(msg: Msg) -> None:
        await msg.respond(msg.data)

    sub = await responder.subscribe("bench.echo", cb=echo)
    await responder.flush()
    payload = b'{"command_id":"0123456789abcdef","amount":1000000}'
    times = []
    for _ in range(count):
        started = time.perf_counter()
        await nc.request("bench.echo", payload, timeout=5)
        times.append(time.perf_counter() - started)
    await sub.unsubscribe()
    return times


def sqlite_upserts(count: int, batch: int = 1000) -> float:
    """Rows per second upserted with `executemany`, a transaction per batch (WAL, NORMAL)."""
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(Path(tmp) / "raw.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(
            "CREATE TABLE accounts (id TEXT PRIMARY KEY, available INTEGER, held INTEGER,"
            " charged INTEGER, earned INTEGER)"
        )
        sql = (
            "INSERT INTO accounts VALUES (?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET"
            " available=excluded.available, held=excluded.held, charged=excluded.charged,"
            " earned=excluded.earned"
        )
        started = time.perf_counter()
        for first in range(0, count, batch):
            rows = [(f"w{n % 5000}", n, n, n, n) for n in range(first, min(count, first + batch))]
            db.execute("BEGIN")
            db.executemany(sql, rows)
            db.execute("COMMIT")
        seconds = time.perf_counter() - started
        db.close()
    return count / seconds


async def measure(report: Report, nc: NATS, responder: NATS, *, messages: int) -> None:
    """Add every raw baseline to `report` (metrics named `raw …`)."""
    report.add("raw publish, awaited", await publish_awaited(nc, messages // 4), "msg/s")
    report.add("raw publish, pipelined", await publish_pipelined(nc, messages), "msg/s")
    report.add("raw ordered-consumer read", await ordered_read(nc, messages), "msg/s")
    batches = await atomic_batches(nc, min(messages // 20, 500))
    report.add("raw atomic batch of 3, p50", percentile(batches, 50) * 1000, "ms")
    report.add("raw atomic batch of 3, p99", percentile(batches, 99) * 1000, "ms")
    rtt = await request_reply(nc, responder, min(messages // 4, 5000))
    report.add("raw request/reply p50", percentile(rtt, 50) * 1000, "ms")
    report.add("raw request/reply p99", percentile(rtt, 99) * 1000, "ms")
    report.add("raw SQLite upserts", await asyncio.to_thread(sqlite_upserts, messages), "rows/s")
    with contextlib.suppress(Exception):  # best effort
        await nc.jetstream().delete_stream(STREAM)


async def run(options: Options) -> Report:
    from bench.platform import nats_server

    messages = 20_000 if options.quick else 100_000
    report = Report("raw", params={"messages": messages})
    async with nats_server() as (nc, responder):
        await measure(report, nc, responder, messages=messages)
    return report
