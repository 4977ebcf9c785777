"""Replay and audit speed, next to the raw read speed of the same log, in one run.

A legal synthetic log shaped like a busy platform's (providers, funded renters, waves of
jobs that run side by side, each usage batch followed by its charge, credit and fee in one
atomic batch, then completion, GPU release and settlement) is appended to a real
nats-server, as the platform would append it (every multi-event decision one atomic
batch). Then, on that log:

- read:            every message with an ordered consumer (`read_chunks`), the baseline;
- read, headers:   the same with stored headers (`read_messages`, what the audit reads);
- read, direct:    batched direct gets, the only way the operator may read the log;
- replay:          `rebuild` into a fresh SQLite file (what `dante replay` does);
- replay, direct:  the same, reading as the operator does;
- audit:           every invariant over the whole log (`dante audit --skip-views`); it must
                   find nothing.

    .venv/bin/python -m bench.replay                     # 200,000 events, a couple of minutes
    .venv/bin/python -m bench.replay --events 1000000    # the full run
    .venv/bin/python -m bench.replay --keep /tmp/log     # reuse the log next time

Appending is the slow part: nats-server 2.15 takes about 2 ms per atomic batch on a
single-replica file stream (it stages the batch on disk before committing it), so a
million events (a quarter of a million charge batches) take ten minutes or more to write.

Prints a table and writes JSON to bench/results/replay-<events>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from dante.events.natsd import NatsServer, find_nats_server
from dante.events.records import BATCH_COMMIT, BATCH_ID, BATCH_SEQUENCE
from dante.events.store import EventStore
from dante.events.streams import ensure_log
from dante.events.subjects import subject_for
from dante.projections import rebuild
from dante.projections.audit import audit
from dante.schemas import events as ev
from dante.schemas.codec import encode
from dante.schemas.money import cost, fee_of
from dante.schemas.values import Gpu, GpuOffer, GpuSample, JobRequirements, ScriptPayload, UsageTick

SOLANA = "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin"
START = datetime(2026, 1, 1, tzinfo=UTC)
PRICE = 2_000_000
FEE_BPS = 500
TICK_MS = 10_000
RESULTS = Path(__file__).parent / "results"

Decision = list[ev.Event]


@dataclass
class _Run:
    job_id: str
    renter: str
    provider: str
    owner: str
    gpu: int
    hold: int
    usage_seq: int = 0
    recorded: int = 0
    charged: int = 0
    fees: int = 0
    ticks: int = 0


@dataclass
class SyntheticLog:
    """Decisions (each one atomic append) of a legal, busy history."""

    providers: int = 100
    gpus: int = 8
    renters: int = 1000
    ticks_per_job: int = 50
    at: datetime = START
    seq: int = 0
    _n: int = 0
    jobs: int = 0
    runs: list[_Run] = field(default_factory=list)

    def _meta(self) -> dict[str, Any]:
        self._n += 1
        return {"event_id": f"b-{self._n}", "at": self.at, "cause": "bench"}

    def _decide(self, *events: ev.Event) -> Decision:
        self.seq += len(events)
        return list(events)

    def decisions(self, total: int) -> Iterator[Decision]:
        yield from self._setup()
        while self.seq < total:
            yield from self._wave(total)

    def _setup(self) -> Iterator[Decision]:
        for p in range(self.providers):
            owner = f"owner{p % 50}"
            gpus = [
                Gpu(index=g, uuid=f"GPU-{p}-{g}", vendor="nvidia", model="H100", vram_mb=81559)
                for g in range(self.gpus)
            ]
            yield self._decide(
                ev.ProviderRegistered(
                    **self._meta(),
                    provider_id=f"prv-{p}",
                    owner=owner,
                    name=f"prv-{p}",
                    payout_address=SOLANA,
                    gpus=gpus,
                    offers=[GpuOffer(index=g, price=PRICE) for g in range(self.gpus)],
                )
            )
        for r in range(self.renters):
            wallet = f"renter{r}"
            yield self._decide(ev.AccountOpened(**self._meta(), wallet_id=wallet, role="renter"))
            yield self._decide(ev.FundsDeposited(**self._meta(), wallet_id=wallet, amount=10**13))

    def _wave(self, total: int) -> Iterator[Decision]:
        """As many jobs as there are GPUs, side by side, ticking in turn, then ending."""
        per_job = 9 + 4 * self.ticks_per_job
        slots = min(self.providers * self.gpus, max(1, (total - self.seq) // per_job))
        hold = cost(PRICE, self.ticks_per_job * TICK_MS) + 1_000
        wave: list[_Run] = []
        for slot in range(slots):
            self.jobs += 1
            p, g = divmod(slot, self.gpus)
            run = _Run(
                job_id=f"job-{self.jobs}",
                renter=f"renter{self.jobs % self.renters}",
                provider=f"prv-{p}",
                owner=f"owner{p % 50}",
                gpu=g,
                hold=hold,
            )
            wave.append(run)
            yield from self._place(run)
        for _ in range(self.ticks_per_job):
            self.at += timedelta(seconds=10)
            for run in wave:
                yield from self._tick(run)
        self.at += timedelta(seconds=1)
        for run in wave:
            yield from self._end(run)

    def _place(self, run: _Run) -> Iterator[Decision]:
        job: dict[str, Any] = {"job_id": run.job_id}
        yield self._decide(
            ev.JobSubmitted(
                **self._meta(),
                **job,
                renter=run.renter,
                requirements=JobRequirements(gpu_count=1),
                payload=ScriptPayload(script="print(1)"),
            )
        )
        attempt: dict[str, Any] = {"job_id": run.job_id, "attempt": 1}
        yield self._decide(
            ev.GpusReserved(
                **self._meta(), **attempt, provider_id=run.provider, gpu_indices=[run.gpu]
            ),
            ev.FundsHeld(**self._meta(), **attempt, wallet_id=run.renter, amount=run.hold),
            ev.JobAssigned(
                **self._meta(),
                **attempt,
                provider_id=run.provider,
                provider_owner=run.owner,
                gpu_indices=[run.gpu],
                price=PRICE,
                fee_bps=FEE_BPS,
                hold=run.hold,
            ),
        )
        yield self._decide(ev.JobAccepted(**self._meta(), **attempt))
        yield self._decide(ev.JobStarted(**self._meta(), **attempt))

    def _tick(self, run: _Run) -> Iterator[Decision]:
        run.ticks += 1
        attempt: dict[str, Any] = {"job_id": run.job_id, "attempt": 1}
        sample = GpuSample(index=run.gpu, gpu_ms=TICK_MS, utilization_pct=97, power_w=600)
        yield self._decide(
            ev.UsageRecorded(
                **self._meta(),
                **attempt,
                ticks=[UsageTick(seq=run.ticks, ended_at=self.at, samples=[sample])],
            )
        )
        run.usage_seq = self.seq
        yield self._charge(run)

    def _charge(self, run: _Run) -> Decision:
        attempt: dict[str, Any] = {"job_id": run.job_id, "attempt": 1}
        amount = cost(PRICE, run.recorded + TICK_MS) - cost(PRICE, run.recorded)
        run.recorded += TICK_MS
        run.charged += amount
        fee = fee_of(run.charged, FEE_BPS) - run.fees
        run.fees += fee
        charge = ev.FundsCharged(
            **self._meta(),
            **attempt,
            wallet_id=run.renter,
            amount=amount,
            usage_seq=run.usage_seq,
            total_gpu_ms=run.recorded,
            price=PRICE,
            fee_bps=FEE_BPS,
            provider_wallet=run.owner,
        )
        return self._decide(
            charge,
            ev.ProviderCredited(
                **self._meta(),
                **attempt,
                wallet_id=run.owner,
                amount=amount - fee,
                charge_id=charge.event_id,
            ),
            ev.FeeCollected(
                **self._meta(),
                **attempt,
                wallet_id="platform",
                amount=fee,
                charge_id=charge.event_id,
            ),
        )

    def _end(self, run: _Run) -> Iterator[Decision]:
        attempt: dict[str, Any] = {"job_id": run.job_id, "attempt": 1}
        yield self._decide(ev.JobCompleted(**self._meta(), **attempt))
        yield self._decide(
            ev.GpusReleased(
                **self._meta(), **attempt, provider_id=run.provider, gpu_indices=[run.gpu]
            )
        )
        yield self._decide(
            ev.HoldReleased(
                **self._meta(), **attempt, wallet_id=run.renter, amount=run.hold - run.charged
            )
        )


class BatchAppender:
    """Appends decisions fast from one connection: each a single publish or an atomic batch,
    many acknowledgements outstanding at once. One connection's messages reach the stream in
    the order sent, so the log is in decision order."""

    def __init__(self, nc: NATS, window: int = 4000) -> None:
        self._nc = nc
        self._inbox = nc.new_inbox()
        self._room = asyncio.Semaphore(window)
        self._window = window
        self._n = 0
        self.errors: list[str] = []

    async def start(self) -> None:
        await self._nc.subscribe(f"{self._inbox}.*", cb=self._acked)

    async def _acked(self, msg: Msg) -> None:
        if b'"error"' in msg.data:
            self.errors.append(msg.data.decode())
        self._room.release()

    async def append(self, decision: Decision) -> None:
        await self._room.acquire()
        self._n += 1
        reply = f"{self._inbox}.{self._n}"
        if len(decision) == 1:
            event = decision[0]
            headers = {"Nats-Msg-Id": event.event_id}
            await self._nc.publish(subject_for(event), encode(event), reply=reply, headers=headers)
            return
        batch = self._nc._nuid.next().decode()  # noqa: SLF001 (nats-py's unique ids)
        for index, event in enumerate(decision, start=1):
            headers = {"Nats-Msg-Id": event.event_id, BATCH_ID: batch, BATCH_SEQUENCE: str(index)}
            last = index == len(decision)
            if last:
                headers[BATCH_COMMIT] = "1"
            await self._nc.publish(
                subject_for(event), encode(event), reply=reply if last else "", headers=headers
            )

    async def drain(self) -> None:
        for _ in range(self._window):
            await self._room.acquire()
        if self.errors:
            raise RuntimeError(f"{len(self.errors)} appends failed, the first: {self.errors[0]}")


async def timed(what: Callable[[], Awaitable[int]]) -> tuple[int, float]:
    started = time.perf_counter()
    count = await what()
    return count, time.perf_counter() - started


def nats_server_version() -> str:
    found = subprocess.run(
        [find_nats_server(), "--version"], capture_output=True, text=True, check=False
    )
    return found.stdout.strip()


async def fill(nc: NATS, store: EventStore, decisions: list[Decision], events: int) -> float:
    """Append the decisions to an empty log (seconds taken), or check a kept one (0)."""
    kept = await store.last_seq()
    if kept == events:
        return 0.0
    if kept != 0:
        raise SystemExit(f"the kept log holds {kept} events, not {events}")
    appender = BatchAppender(nc)
    await appender.start()
    started = time.perf_counter()
    for decision in decisions:
        await appender.append(decision)
    await appender.drain()
    return time.perf_counter() - started


async def measure(
    nc: NATS, store: EventStore, workdir: Path
) -> tuple[dict[str, tuple[int, float]], int]:
    """Each step's (events, seconds), and how many violations the audit found."""
    # Reading as the operator: batched direct gets instead of a consumer (on this bare
    # server the operator's API prefix is the default one, so say so by hand).
    operator = EventStore(nc)
    operator._api = "operator"  # noqa: SLF001
    violations: list[int] = []

    async def read() -> int:
        return sum([len(chunk) async for chunk in store.read_chunks()])

    async def read_headers() -> int:
        return sum([len(chunk) async for chunk in store.read_messages()])

    async def read_direct() -> int:
        return sum([len(chunk) async for chunk in operator.read_chunks()])

    async def replay() -> int:
        return (await rebuild(store, workdir / "replay.sqlite3", replace=True)).events

    async def replay_direct() -> int:
        return (await rebuild(operator, workdir / "replay-direct.sqlite3", replace=True)).events

    async def audit_all() -> int:
        report = await audit(store)
        violations.append(sum(report.counts.values()))
        return report.events

    timings: dict[str, tuple[int, float]] = {}
    for name, step in (
        ("read", read),
        ("read, headers", read_headers),
        ("read, direct gets", read_direct),
        ("replay", replay),
        ("replay, direct gets", replay_direct),
        ("audit", audit_all),
    ):
        timings[name] = await timed(step)
        print(f"  {name} done in {timings[name][1]:.2f} s", flush=True)
    return timings, violations[0]


async def main(total: int, workdir: Path, store_dir: Path | None = None) -> dict[str, Any]:
    log = SyntheticLog()
    decisions = list(log.decisions(total))
    events = log.seq
    print(f"{events:,} events in {len(decisions):,} decisions, {log.jobs:,} jobs")
    results: dict[str, Any] = {"events": events, "jobs": log.jobs}
    with NatsServer(store_dir=store_dir or workdir / "nats") as server:
        nc = await nats.connect(server.url)
        try:
            await ensure_log(nc.jetstream())
            store = EventStore(nc)
            append_s = await fill(nc, store, decisions, events)
            timings, violations = await measure(nc, store, workdir)
        finally:
            await nc.close()
    for name, (count, _) in timings.items():
        assert count == events, (name, count)
    base = timings["read"][1]
    direct = timings["read, direct gets"][1]
    results |= {
        "append_s": round(append_s, 3),
        "timings": {
            name: {
                "seconds": round(seconds, 3),
                "events_per_second": round(count / seconds),
                "vs_read": round(seconds / base, 3),
            }
            for name, (count, seconds) in timings.items()
        },
        "replay_rate_share_of_read": round(base / timings["replay"][1], 3),
        "replay_direct_rate_share_of_direct_read": round(
            direct / timings["replay, direct gets"][1], 3
        ),
        "audit_violations": violations,
        "machine": {
            "cpus": os.cpu_count(),
            "load_1m": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
            "nats_server": nats_server_version(),
            "platform": platform.platform(),
        },
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return results


def print_table(results: dict[str, Any]) -> None:
    appended = f"appended in {results['append_s']:.1f} s" if results["append_s"] else "kept"
    print(f"\n{results['events']:,} events ({appended})")
    print(f"{'step':<22}{'seconds':>10}{'events/s':>14}{'x read time':>14}")
    for name, row in results["timings"].items():
        print(
            f"{name:<22}{row['seconds']:>10.2f}{row['events_per_second']:>14,}"
            f"{row['vs_read']:>14.2f}"
        )
    print(
        f"replay reads at {results['replay_rate_share_of_read']:.0%} of the raw read rate "
        f"({results['replay_direct_rate_share_of_direct_read']:.0%} reading as the operator); "
        f"the audit found {results['audit_violations']} violations"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--out", type=Path, default=None, help="where to write the JSON")
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="keep the log in this folder and reuse it next time (appending takes longest)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        found = asyncio.run(main(args.events, Path(tmp), args.keep))
    print_table(found)
    RESULTS.mkdir(exist_ok=True)
    out = args.out or RESULTS / f"replay-{args.events}.json"
    out.write_text(json.dumps(found, indent=2) + "\n")
    print(f"wrote {out}")
