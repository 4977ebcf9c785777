"""Command latency: request to reply for typical commands, against a raw NATS round trip.

`dante up` runs in its own process on a log seeded with 100 providers running jobs. Each
command is sent one at a time (no other load), and its reply awaited:

- Deposit: a renter's command, one event appended with its wallet's version checked;
- RecordUsage: what an agent sends every 10 s (10 ticks of a 4-GPU job), one event;
- GetBalance: a query answered from the read models (SQLite), nothing appended.

The baseline is a plain NATS request to a responder that echoes it, in the same run.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
from solders.keypair import Keypair

from bench import raw
from bench.platform import Heartbeats, RunningJob, Up, nats_server, plan_fleet, seed
from bench.platform import server_url as url_of
from bench.report import Report, percentile
from dante.chain import spl
from dante.schemas import commands as cmd
from dante.schemas.chain import ChainInfo, deposit_memo
from dante.schemas.codec import decode_reply, encode
from dante.schemas.values import GpuSample, UsageTick

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

    from bench.options import Options


async def _time(nc: NATS, count: int, make: Callable[[int], tuple[str, bytes]]) -> list[float]:
    times = []
    for n in range(count):
        subject, payload = make(n)
        started = time.perf_counter()
        msg = await nc.request(subject, payload, timeout=30)
        times.append(time.perf_counter() - started)
        reply = decode_reply(msg.data)
        if not reply.ok:
            assert reply.error is not None
            raise RuntimeError(f"{subject} refused: {reply.error.message}")
    return times


async def run(options: Options) -> Report:
    count = 200 if options.quick else 1000
    report = Report("commands", params={"each": count, "providers": 100})
    with tempfile.TemporaryDirectory() as tmp:
        async with nats_server(Path(tmp) / "nats") as (nc, other):
            rtt = await raw.request_reply(nc, other, count)
            report.add("raw request/reply p50", percentile(rtt, 50) * 1000, "ms")
            report.add("raw request/reply p99", percentile(rtt, 99) * 1000, "ms")
            fleet, jobs = plan_fleet(100, 8, [4, 2, 1, 1], renters=10)
            await seed(nc, fleet, gpus_per_provider=8, started_ago_s=3600)
            beats = Heartbeats(nc, fleet.providers)
            async with Up(url_of(nc), Path(tmp) / "up") as up:
                await up.views_reach(fleet.last_seq)
                await up.dispatch_ready(nc, len(fleet.providers))
                beating = asyncio.create_task(beats.run())
                try:
                    await _measure(report, nc, jobs, count)
                finally:
                    beating.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await beating
    return report


async def _measure(report: Report, nc: NATS, jobs: list[RunningJob], count: int) -> None:
    # A deposit is a payment: one payer gets test dGPU from the local chain's faucet, and
    # each deposit carries its own signed transfer (the whole verified path is timed: sent
    # to the chain, confirmed, read back, credited).
    payer = Keypair()
    funds = (count + 40) * 2_000_000
    faucet = cmd.Faucet(command_id=uuid.uuid4().hex, address=str(payer.pubkey()), amount=funds)
    await nc.request("dante.cmd.renter.payer0.faucet", encode(faucet), timeout=30)
    reply = decode_reply(
        (await nc.request("dante.cmd.renter.payer0.chain", encode(cmd.GetChain()), timeout=30)).data
    )
    chain = msgspec.json.decode(reply.result, type=ChainInfo)
    serial = itertools.count()

    def deposit(_: int) -> tuple[str, bytes]:
        n = next(serial)
        renter = f"payer{n % 10}"
        tx = spl.deposit_transaction(
            payer,
            mint=chain.mint,
            treasury=chain.treasury,
            amount=1_000_000 + n,
            note=deposit_memo(renter),
            blockhash=chain.blockhash,
        )
        command = cmd.Deposit(
            command_id=uuid.uuid4().hex,
            amount=1_000_000 + n,
            signature=str(tx.signatures[0]),
            transaction=base64.b64encode(bytes(tx)).decode(),
        )
        return f"dante.cmd.renter.{renter}.deposit", encode(command)

    four = [job for job in jobs if len(job.gpu_indices) == 4]
    next_tick = dict.fromkeys((job.job_id for job in four), 1)

    def usage(n: int) -> tuple[str, bytes]:
        job = four[n % len(four)]
        first = next_tick[job.job_id]
        next_tick[job.job_id] = first + 10
        now = datetime.now(UTC)
        ticks = [
            UsageTick(
                seq=first + k,
                ended_at=now - timedelta(seconds=9 - k),
                samples=[GpuSample(index=i, gpu_ms=1000) for i in job.gpu_indices],
            )
            for k in range(10)
        ]
        command = cmd.RecordUsage(
            command_id=uuid.uuid4().hex,
            provider_id=job.provider_id,
            job_id=job.job_id,
            attempt=1,
            ticks=ticks,
        )
        return f"dante.cmd.provider.{job.owner}.usage", encode(command)

    def balance(n: int) -> tuple[str, bytes]:
        return f"dante.cmd.renter.renter{n % 10:04d}.balance", encode(cmd.GetBalance())

    for name, make in (("Deposit", deposit), ("RecordUsage", usage), ("GetBalance", balance)):
        await _time(nc, 20, make)  # warm up
        times = await _time(nc, count, make)
        report.add(f"{name} p50", percentile(times, 50) * 1000, "ms", vs="raw request/reply p50")
        report.add(f"{name} p99", percentile(times, 99) * 1000, "ms", vs="raw request/reply p99")
