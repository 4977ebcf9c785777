"""How fast the projections rebuild, against reading the log alone.

A synthetic log shaped like a busy platform's (mostly usage batches, each followed by its
charge, credit and fee) is appended to a real nats-server. Then, in the same run:

- read:    stream every message off the log (`read_chunks`, the fastest way), the baseline;
- decode:  decode every payload (in memory);
- fold:    fold the decoded events into the views and take batches (in memory);
- write:   fold and write the batches to SQLite (no log);
- rebuild: `rebuild()` from the log into a fresh file, end to end.

The goal is a rebuild bounded by reading: rebuild / read close to 1.

    .venv/bin/python -m bench.projections_rebuild --events 200000
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats

from dante.events.codec import decode_event
from dante.events.natsd import NatsServer
from dante.events.pipeline import Pipeline
from dante.events.records import Append
from dante.events.store import EventStore
from dante.events.streams import ensure_log
from dante.projections import PROJECTIONS, rebuild
from dante.projections.projector import Projector
from dante.projections.sqlite import connect, prepare, write
from dante.schemas import events as ev
from dante.schemas.codec import encode
from dante.schemas.money import cost, fee_of
from dante.schemas.values import Gpu, GpuOffer, GpuSample, JobRequirements, ScriptPayload, UsageTick

SOLANA = "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin"
START = datetime(2026, 1, 1, tzinfo=UTC)


def synthetic_log(total: int, *, ticks_per_job: int = 50) -> Iterator[ev.Event]:
    """About `total` events: providers, deposits, then jobs that run, meter, pay and end."""
    n = 0
    at = START

    def meta() -> dict[str, Any]:
        nonlocal n
        n += 1
        return {"event_id": f"b-{n}", "at": at, "cause": "bench"}

    providers = [f"prv-{i}" for i in range(100)]
    renters = [f"renter{i}" for i in range(1000)]
    for i, pid in enumerate(providers):
        gpus = [
            Gpu(index=g, uuid=f"GPU-{i}-{g}", vendor="nvidia", model="NVIDIA H100", vram_mb=81559)
            for g in range(8)
        ]
        yield ev.ProviderRegistered(
            **meta(),
            provider_id=pid,
            owner=f"owner{i % 50}",
            name=pid,
            payout_address=SOLANA,
            gpus=gpus,
            offers=[GpuOffer(index=g, price=2_000_000) for g in range(8)],
        )
    for renter in renters:
        yield ev.FundsDeposited(**meta(), wallet_id=renter, amount=10**12)
    job = 0
    while n < total:
        job += 1
        job_id, renter = f"job-{job}", renters[job % len(renters)]
        pid, owner = providers[job % len(providers)], f"owner{(job % len(providers)) % 50}"
        indices = [job % 8]
        yield ev.JobSubmitted(
            **meta(),
            job_id=job_id,
            renter=renter,
            requirements=JobRequirements(gpu_count=1),
            payload=ScriptPayload(script="print(1)"),
        )
        yield ev.JobAssigned(
            **meta(),
            job_id=job_id,
            attempt=1,
            provider_id=pid,
            provider_owner=owner,
            gpu_indices=indices,
            price=2_000_000,
            fee_bps=500,
            hold=10**9,
        )
        yield ev.GpusReserved(
            **meta(), provider_id=pid, job_id=job_id, attempt=1, gpu_indices=indices
        )
        yield ev.FundsHeld(**meta(), wallet_id=renter, job_id=job_id, attempt=1, amount=10**9)
        yield ev.JobStarted(**meta(), job_id=job_id, attempt=1)
        gpu_ms = charged = fees = 0
        for tick in range(1, ticks_per_job + 1):
            at += timedelta(seconds=10)
            sample = GpuSample(index=indices[0], gpu_ms=10_000, utilization_pct=97, power_w=400)
            yield ev.UsageRecorded(
                **meta(),
                job_id=job_id,
                attempt=1,
                ticks=[UsageTick(seq=tick, ended_at=at, samples=[sample])],
            )
            gpu_ms += 10_000
            amount = cost(2_000_000, gpu_ms) - charged
            charged += amount
            fee = fee_of(charged, 500) - fees
            fees += fee
            charge = ev.FundsCharged(
                **meta(),
                wallet_id=renter,
                job_id=job_id,
                attempt=1,
                amount=amount,
                usage_seq=n,
                total_gpu_ms=gpu_ms,
                price=2_000_000,
                fee_bps=500,
                provider_wallet=owner,
            )
            yield charge
            yield ev.ProviderCredited(
                **meta(),
                wallet_id=owner,
                job_id=job_id,
                attempt=1,
                amount=amount - fee,
                charge_id=charge.event_id,
            )
            yield ev.FeeCollected(
                **meta(),
                wallet_id="platform",
                job_id=job_id,
                attempt=1,
                amount=fee,
                charge_id=charge.event_id,
            )
        yield ev.JobCompleted(**meta(), job_id=job_id, attempt=1)
        yield ev.GpusReleased(
            **meta(), provider_id=pid, job_id=job_id, attempt=1, gpu_indices=indices
        )
        yield ev.HoldReleased(
            **meta(), wallet_id=renter, job_id=job_id, attempt=1, amount=10**9 - charged
        )


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:>10,.0f} events/s  ({seconds:6.2f} s)"


async def main(total: int, workdir: Path) -> None:
    events = list(synthetic_log(total))
    payloads = [encode(event) for event in events]
    print(f"{len(events):,} events, {sum(map(len, payloads)) / len(payloads):.0f} bytes each")

    started = time.perf_counter()
    decoded = [decode_event(data) for data in payloads]
    decode_s = time.perf_counter() - started

    projector = Projector(PROJECTIONS)
    started = time.perf_counter()
    for seq, event in enumerate(decoded, start=1):
        projector.apply(seq, event)
        if projector.pending >= 20_000:
            projector.take()
    projector.take()
    fold_s = time.perf_counter() - started

    db = await connect(workdir / "write.db")
    await db.execute("PRAGMA synchronous=OFF")
    await prepare(db, PROJECTIONS)
    projector = Projector(PROJECTIONS)
    started = time.perf_counter()
    for seq, event in enumerate(decoded, start=1):
        projector.apply(seq, event)
        if projector.pending >= 20_000:
            await write(db, projector.take())
    await write(db, projector.take())
    write_s = time.perf_counter() - started
    await db.close()

    with NatsServer(store_dir=workdir / "nats") as server:
        nc = await nats.connect(server.url)
        try:
            await ensure_log(nc.jetstream())
            store = EventStore(nc)
            started = time.perf_counter()
            await Pipeline(store).append_all(Append(event=event) for event in events)
            append_s = time.perf_counter() - started

            started = time.perf_counter()
            async for _ in store.read_raw():
                pass
            read_raw_s = time.perf_counter() - started

            started = time.perf_counter()
            count = 0
            async for chunk in store.read_chunks():
                count += len(chunk)
            read_s = time.perf_counter() - started

            report = await rebuild(store, workdir / "rebuilt.db")
            rebuild_s = report.seconds
        finally:
            await nc.close()

    print(f"append   {rate(len(events), append_s)}")
    print(f"read_raw {rate(count, read_raw_s)}   (one message at a time)")
    print(f"read     {rate(count, read_s)}   <- baseline (read_chunks)")
    print(f"decode   {rate(len(events), decode_s)}")
    print(f"fold     {rate(len(events), fold_s)}")
    print(f"write    {rate(len(events), write_s)}   (fold + SQLite, no log)")
    print(f"rebuild  {rate(report.events, rebuild_s)}")
    print(f"rebuild / read = {rebuild_s / read_s:.2f}")
    print(f"rows: {report.rows}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main(args.events, Path(tmp)))
