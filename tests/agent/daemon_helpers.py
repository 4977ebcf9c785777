"""For the daemon's tests: a renter's side, and the truth read straight from the log."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from nats.aio.client import Client as NATS

from dante.client.commands import Client, new_command_id
from dante.domain.model import World
from dante.events.codec import Recorded
from dante.events.store import EventStore
from dante.schemas import commands as cmd
from dante.schemas import events as ev
from dante.schemas.money import cost
from dante.schemas.results import SubmitResult
from dante.schemas.values import FileRef, JobPayload, JobRequirements, ScriptPayload
from tests.funding import fund

DGPU = 1_000_000
SIMULATE = "2xNVIDIA H100 80GB HBM3:80"


class Renter:
    def __init__(self, nc: NATS, name: str = "alice") -> None:
        self.client = Client(nc, "renter", name, timeout=10)
        self.name = name

    async def deposit(self, dgpu: int = 100) -> None:
        await fund(self.client, dgpu * DGPU)

    async def submit(
        self,
        payload: JobPayload | str,
        *,
        inputs: list[FileRef] | None = None,
        **requirements: Any,
    ) -> str:
        if isinstance(payload, str):
            payload = ScriptPayload(script=payload)
        result = await self.client.send(
            cmd.SubmitJob(
                command_id=new_command_id(),
                requirements=JobRequirements(**requirements),
                payload=payload,
                inputs=inputs or [],
            ),
            SubmitResult,
        )
        return result.job_id

    async def cancel(self, job_id: str) -> None:
        await self.client.send(cmd.CancelJob(command_id=new_command_id(), job_id=job_id))


async def history(nc: NATS) -> list[Recorded]:
    return [recorded async for recorded in EventStore(nc).read()]


async def world(nc: NATS) -> World:
    folded = World()
    for recorded in await history(nc):
        folded.apply(recorded)
    return folded


async def wait_for(
    nc: NATS, check: Callable[[World], bool], timeout: float = 60, what: str = "it"
) -> World:
    """The log folded, once `check` holds for it."""
    deadline = time.monotonic() + timeout
    while True:
        folded = await world(nc)
        if check(folded):
            return folded
        if time.monotonic() > deadline:
            jobs = {j.job_id: (j.status, j.attempt, j.end_reason) for j in folded.jobs.values()}
            raise AssertionError(f"timed out waiting for {what}; jobs: {jobs}")
        await anyio.sleep(0.2)


def ended(job_id: str) -> Callable[[World], bool]:
    return lambda w: w.job(job_id).ended


def settled(job_id: str) -> Callable[[World], bool]:
    """The job ended and billing has charged all its recorded usage."""

    def check(w: World) -> bool:
        books = [b for (j, _), b in w.books.items() if j == job_id]
        return w.job(job_id).ended and all(b.unbilled_ms == 0 for b in books)

    return check


def events_of(records: list[Recorded], kind: type[ev.Event], job_id: str) -> list[Any]:
    return [
        r.event
        for r in records
        if isinstance(r.event, kind) and getattr(r.event, "job_id", None) == job_id
    ]


def usage_by_attempt(records: list[Recorded], job_id: str) -> dict[int, list[int]]:
    """Tick numbers recorded for each attempt of a job."""
    seqs: dict[int, list[int]] = {}
    for event in events_of(records, ev.UsageRecorded, job_id):
        seqs.setdefault(event.attempt, []).extend(t.seq for t in event.ticks)
    return seqs


def check_usage(records: list[Recorded], job_id: str, price: int) -> int:
    """Each tick counted once, no attempt's GPU time above its running time, and the renter
    charged exactly the rounding rule's amount per attempt. Returns the total charged."""
    expected = 0
    for attempt, seqs in usage_by_attempt(records, job_id).items():
        assert len(seqs) == len(set(seqs)), f"attempt {attempt}: a tick recorded twice"
        used = events_of(records, ev.UsageRecorded, job_id)
        per_gpu: dict[int, int] = {}
        for event in used:
            if event.attempt == attempt:
                for tick in event.ticks:
                    for sample in tick.samples:
                        per_gpu[sample.index] = per_gpu.get(sample.index, 0) + sample.gpu_ms
        started = [e.at for e in events_of(records, ev.JobStarted, job_id) if e.attempt == attempt]
        last = max(e.at for e in used if e.attempt == attempt)
        assert started, f"attempt {attempt} has usage but never started"
        running_ms = (last - started[0]).total_seconds() * 1000
        assert max(per_gpu.values()) <= running_ms, "more GPU time than running time"
        expected += cost(price, sum(per_gpu.values()))
    charged: int = sum(e.amount for e in events_of(records, ev.FundsCharged, job_id))
    assert charged == expected
    return charged


def read_text(path: Path) -> str:
    return path.read_text() if path.exists() else ""
