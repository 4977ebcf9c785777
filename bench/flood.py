"""One account floods the platform; how the other accounts fare.

`dante up` runs in its own process (default limits). A flooder, in a process of its own,
publishes requests as one account (`mallory`) at a fixed rate without waiting for answers,
and counts the answers by code. Meanwhile two other accounts each send a `GetBalance` every
50 ms, one at a time, and their latencies are measured: before the flood (quiet), during it,
and right after it. Then the same with log-writing commands (a new daily budget cap each,
standing in for the deposits of 1 µdGPU of the issue): how many events the flood
appended. The issue this answers measured, before admission, ~75,000 queued requests, no
answer to the others for two minutes, and 49,985 events from a 10 s deposit flood.

Baseline in the same run: a plain NATS request/reply round trip, and the others' latency on
the quiet platform.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nats

from bench import raw
from bench.platform import Up, nats_server
from bench.platform import server_url as url_of
from bench.report import Report, percentile
from dante.events.store import EventStore
from dante.schemas import commands as cmd
from dante.schemas.codec import decode_reply, encode

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

    from bench.options import Options

OTHERS = ("alice", "dave")


@dataclass
class Bystander:
    nc: NATS
    account: str
    latencies: list[float] = field(default_factory=list)
    failures: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        subject = f"dante.cmd.renter.{self.account}.balance"
        while not stop.is_set():
            payload = encode(cmd.GetBalance(command_id=uuid.uuid4().hex))
            started = time.perf_counter()
            try:
                msg = await self.nc.request(subject, payload, timeout=5)
                if not decode_reply(msg.data).ok:
                    self.failures += 1
            except Exception:
                self.failures += 1
            self.latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.05)


async def _watch(
    nc: NATS, seconds: float, during: asyncio.Future[dict[str, int]] | None = None
) -> list[Bystander]:
    """The others' latencies for `seconds`, or until `during` is done."""
    others = [Bystander(nc, name) for name in OTHERS]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(b.run(stop)) for b in others]
    if during is not None:
        await during
    else:
        await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks)
    return others


def _summary(report: Report, phase: str, others: list[Bystander], vs: str) -> None:
    times = [t for b in others for t in b.latencies]
    report.add(
        f"others' p50 {phase}", percentile(times, 50) * 1000, "ms", vs=vs.replace("p90", "p50")
    )
    report.add(f"others' p90 {phase}", percentile(times, 90) * 1000, "ms", vs=vs)
    report.add(f"others' max {phase}", max(times) * 1000, "ms")
    report.add(f"others' failed requests {phase}", sum(b.failures for b in others), "")


async def _flood(url: str, verb: str, rate: int, seconds: float) -> dict[str, int]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.flood", url, verb, str(rate), str(seconds),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await process.communicate()
    counts: dict[str, int] = json.loads(out.decode().strip().splitlines()[-1])
    return counts


async def run(options: Options) -> Report:
    rate = 2000 if options.quick else 5000
    seconds = 3.0 if options.quick else (options.seconds or 20.0)
    deposit_seconds = 2.0 if options.quick else 10.0
    report = Report(
        "flood",
        params={"rate_per_s": rate, "seconds": seconds, "deposit_seconds": deposit_seconds},
    )
    with tempfile.TemporaryDirectory() as tmp:
        async with nats_server(Path(tmp) / "nats") as (nc, other):
            rtt = await raw.request_reply(nc, other, 500)
            report.add("raw request/reply p50", percentile(rtt, 50) * 1000, "ms")
            report.add("raw request/reply p90", percentile(rtt, 90) * 1000, "ms")
            async with Up(url_of(nc), Path(tmp) / "up"):
                url = url_of(nc)
                _summary(report, "quiet", await _watch(nc, 5.0), "raw request/reply p90")

                flood = asyncio.ensure_future(_flood(url, "balance", rate, seconds))
                others = await _watch(nc, 0, during=flood)
                counts = flood.result()
                _summary(report, "during a balance flood", others, "others' p90 quiet")
                report.add("balance flood: sent", counts["sent"], "requests")
                report.add("balance flood: served", counts.get("ok", 0), "requests")
                report.add(
                    "balance flood: refused rate_limited", counts.get("rate_limited", 0), "requests"
                )
                report.add("balance flood: unanswered 2 s after", counts["unanswered"], "requests")
                _summary(report, "right after it", await _watch(nc, 3.0), "others' p90 quiet")

                store = EventStore(nc)
                before = await store.last_seq()
                flood = asyncio.ensure_future(_flood(url, "budget", rate, deposit_seconds))
                others = await _watch(nc, 0, during=flood)
                counts = flood.result()
                await asyncio.sleep(1.0)
                _summary(report, "during a deposit flood", others, "others' p90 quiet")
                report.add("deposit flood: sent", counts["sent"], "commands")
                report.add(
                    "deposit flood: events appended", await store.last_seq() - before, "events"
                )
    report.notes.append(
        "Before admission (the issue's measurements, 5,000/s): ~75,000 requests queued, the "
        "others unanswered during the flood and ~2 minutes after; a 10 s deposit flood "
        "appended 49,985 events."
    )
    return report


async def _flooder(url: str, verb: str, rate: int, seconds: float) -> dict[str, int]:
    """Publish `rate` requests a second as mallory for `seconds`; count answers by code."""
    nc = await nats.connect(url, name="bench-flooder", pending_size=256 << 20)
    answers: Counter[str] = Counter()

    async def answer(msg: object) -> None:
        reply = decode_reply(msg.data)  # type: ignore[attr-defined]
        answers["ok" if reply.ok else reply.error.code] += 1  # type: ignore[union-attr]

    # The platform answers on mallory's reply prefix, under each request's header token.
    await nc.subscribe("dante.reply.mallory.*", cb=answer)
    subject = f"dante.cmd.renter.mallory.{verb}"
    sent = 0
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        due = int(elapsed * rate)
        while sent < due:
            command: cmd.Command[Any] = (
                # A log-writing command any renter may send, a new cap each time (a deposit
                # now needs a payment on chain, refused after admission without one).
                cmd.SetBudget(command_id=uuid.uuid4().hex, daily=sent + 1)
                if verb == "budget"
                else cmd.GetBalance(command_id=uuid.uuid4().hex)
            )
            token = f"flood{sent:08d}"
            await nc.publish(subject, encode(command), headers={"Dante-Reply": token})
            sent += 1
        await asyncio.sleep(0.005)
    await nc.flush()
    await asyncio.sleep(2.0)
    await nc.close()
    return {**answers, "sent": sent, "unanswered": sent - sum(answers.values())}


if __name__ == "__main__":
    url, verb, rate, seconds = sys.argv[1:5]
    print(json.dumps(asyncio.run(_flooder(url, verb, int(rate), float(seconds)))))
