"""Every event of one job's life, gathered from the log without reading all of it.

A job's events are those on its own subject; the GPU reservation and release of each of its
attempts (on the provider's subject, the reservation in the assignment's atomic batch); and
the money moved for it: holds, charges, low-funds warnings and releases on the renter's
wallet (read from the submission on, until the job has ended and every attempt is billed
and released), and each charge's provider credit and platform fee, which billing appends as
the next two messages of the charge's atomic batch (the audit checks that it always does).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import msgspec

from dante.events.codec import decode_event
from dante.events.store import EventStore
from dante.events.subjects import EVENT_PREFIX, subject_of
from dante.schemas import events as ev


@dataclass(frozen=True, slots=True)
class Stored:
    """One stored event: sequence, subject, payload bytes, decoded event."""

    seq: int
    subject: str
    payload: bytes
    event: ev.Event


class _Settling:
    """When the renter's wallet can hold nothing more for the job: it has ended, and every
    attempt's usage is billed and its hold back to zero."""

    def __init__(self, job_events: list[Stored]) -> None:
        self.ended_seq = 0
        self.recorded: dict[int, int] = {}
        #: Attempts lost to their providers: their usage is never billed.
        self.lost: set[int] = set()
        for record in job_events:
            match record.event:
                case ev.UsageRecorded() as usage:
                    self.recorded[usage.attempt] = (
                        self.recorded.get(usage.attempt, 0) + usage.gpu_ms
                    )
                case ev.JobCompleted() | ev.JobFailed() | ev.JobCancelled() | ev.JobStopped():
                    self.ended_seq = record.seq
                case ev.JobAssigned() as assigned:
                    self.recorded.setdefault(assigned.attempt, 0)
                case ev.JobRequeued() as requeued:
                    self.lost.add(requeued.attempt)
                case _:
                    pass
            if isinstance(record.event, ev.JobFailed) and record.event.lost:
                self.lost.add(record.event.attempt or max(self.recorded, default=0))
        self.billed: dict[int, int] = {}
        self.held: dict[int, int] = {}

    def take(self, event: ev.Event) -> None:
        match event:
            case ev.FundsHeld():
                self.held[event.attempt] = self.held.get(event.attempt, 0) + event.amount
            case ev.HoldReleased():
                self.held[event.attempt] = self.held.get(event.attempt, 0) - event.amount
            case ev.FundsCharged():
                self.held[event.attempt] = self.held.get(event.attempt, 0) - event.amount
                self.billed[event.attempt] = event.total_gpu_ms
            case _:
                pass

    def done(self, seq: int) -> bool:
        return (
            bool(self.ended_seq)
            and seq > self.ended_seq
            and all(
                self.billed.get(n, 0) >= ms for n, ms in self.recorded.items() if n not in self.lost
            )
            and not any(self.held.values())
        )


class _Log:
    """Reads stored events by subject, up to a sequence, decoding only those that may name
    the job (a byte test first: how msgspec writes `"job_id":"<id>"`)."""

    def __init__(self, store: EventStore, job_id: str, stop: int) -> None:
        self._store = store
        self._mark = b'"job_id":' + msgspec.json.encode(job_id)
        self.job_id = job_id
        self.stop = stop

    async def events(
        self, subjects: str, start: int, *, limit: int | None = None, mine: bool = True
    ) -> AsyncIterator[Stored]:
        async for seq, headers, data in self._store.scan_raw(subjects, max(1, start), limit=limit):
            if seq > self.stop:
                return
            if mine and self._mark not in data:
                continue
            event = decode_event(data)
            if mine and getattr(event, "job_id", None) != self.job_id:
                continue
            yield Stored(seq, headers.get("Nats-Subject", subjects), data, event)


async def _reservations(log: _Log, assigned: Stored) -> list[Stored]:
    """The GPU reservation and release of one attempt, on its provider's subject."""
    event = assigned.event
    assert isinstance(event, ev.JobAssigned)
    taken: list[Stored] = []
    # The reservation is in the assignment's batch, just before it.
    async for record in log.events(subject_of("provider", event.provider_id), assigned.seq - 2):
        found = record.event
        if isinstance(found, ev.GpusReserved | ev.GpusReleased) and found.attempt == event.attempt:
            taken.append(record)
            if isinstance(found, ev.GpusReleased):
                break
    return taken


async def _money(log: _Log, renter: str, submitted: int, own: list[Stored]) -> list[Stored]:
    """Holds, charges (with their credit and fee), warnings and releases for the job."""
    taken: list[Stored] = []
    settling = _Settling(own)
    async for record in log.events(subject_of("wallet", renter), submitted):
        if settling.done(record.seq):
            break
        settling.take(record.event)
        taken.append(record)
        if isinstance(record.event, ev.FundsCharged | ev.ChargeRefunded):
            # Its credit and fee (or their reversals) follow it in its batch.
            name = "charge_id" if isinstance(record.event, ev.FundsCharged) else "refund_id"
            event_id = record.event.event_id
            async for split in log.events(
                f"{EVENT_PREFIX}.wallet.>", record.seq + 1, limit=2, mine=False
            ):
                if getattr(split.event, name, None) == event_id:
                    taken.append(split)  # noqa: PERF401 (an async for inside an async for)
    return taken


async def job_events(store: EventStore, job_id: str, *, to_seq: int | None = None) -> list[Stored]:
    """Every event of the job's life up to `to_seq` (default: all), in log order."""
    log = _Log(store, job_id, to_seq if to_seq is not None else await store.last_seq())
    own = [record async for record in log.events(subject_of("job", job_id), 1, mine=False)]
    found = {record.seq: record for record in own}
    submitted = next((r for r in own if isinstance(r.event, ev.JobSubmitted)), None)
    if submitted is not None:
        assert isinstance(submitted.event, ev.JobSubmitted)
        for record in own:
            if isinstance(record.event, ev.JobAssigned):
                found.update((r.seq, r) for r in await _reservations(log, record))
        money = await _money(log, submitted.event.renter, submitted.seq, own)
        found.update((r.seq, r) for r in money)
        found.update((r.seq, r) for r in await _earnings_settled(log, money))
    return sorted(found.values(), key=lambda r: r.seq)


async def _earnings_settled(log: _Log, money: list[Stored]) -> list[Stored]:
    """The `EarningsSettled` of each attempt that credited its provider, on the provider's
    wallet: billing appends it when settling, so it follows the attempt's last credit."""
    last_credit: dict[tuple[str, int], int] = {}
    for record in money:
        if isinstance(record.event, ev.ProviderCredited):
            last_credit[(record.event.wallet_id, record.event.attempt)] = record.seq
    taken: list[Stored] = []
    for (owner, attempt), seq in sorted(last_credit.items()):
        async for record in log.events(subject_of("wallet", owner), seq + 1):
            event = record.event
            if isinstance(event, ev.EarningsSettled | ev.CreditReversed) and (
                event.attempt == attempt
            ):
                if isinstance(event, ev.EarningsSettled):
                    taken.append(record)
                break
    return taken
