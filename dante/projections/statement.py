"""A job's statement: every event of its life, its usage, price, charges, fee and release,
with a digest chained over those events in log order.

The renter and the provider of a job each ask for its statement and compare one value, the
digest: equal digests mean they were shown the same events, in the same order, at the same
sequences. The digest covers the stored bytes of every event, so anyone with the raw log can
recompute it without trusting the platform:

    link₀ = SHA-256("dante-statement-v1:" + job id)
    linkᵢ = SHA-256(linkᵢ₋₁ ‖ seqᵢ as 8 bytes big-endian ‖ SHA-256(payloadᵢ))
    digest = hex(linkₙ)

Which events are a job's is `dante.projections.job_events`' to say.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from dante.events.describe import describe
from dante.events.store import EventStore
from dante.projections.job_events import Stored, job_events
from dante.schemas import events as ev
from dante.schemas.statements import (
    AttemptStatement,
    ChargeLine,
    JobStatement,
    StatementEntry,
    UsageLine,
)

DIGEST_PREFIX: Final = b"dante-statement-v1:"
_ENDS: Final[dict[type[ev.Event], str]] = {
    ev.JobCompleted: "completed",
    ev.JobFailed: "failed",
    ev.JobCancelled: "cancelled",
    ev.JobStopped: "stopped",
}


# ── what a statement is ─────────────────────────────────────────────────────────────────


def first_link(job_id: str) -> bytes:
    return hashlib.sha256(DIGEST_PREFIX + job_id.encode()).digest()


def next_link(link: bytes, seq: int, payload_sha256: bytes) -> bytes:
    return hashlib.sha256(link + seq.to_bytes(8, "big") + payload_sha256).digest()


def digest_of(job_id: str, entries: Iterable[tuple[int, str]]) -> str:
    """The digest of (sequence, hex SHA-256 of the stored payload) pairs, in log order."""
    link = first_link(job_id)
    for seq, payload_sha256 in entries:
        link = next_link(link, seq, bytes.fromhex(payload_sha256))
    return link.hex()


# ── folding a job's events into its statement ───────────────────────────────────────────


@dataclass(slots=True)
class _Attempt:
    assigned: ev.JobAssigned
    started_at: datetime | None = None
    ended_at: datetime | None = None
    ended: str = ""
    usage: list[UsageLine] = field(default_factory=list)
    charges: list[ChargeLine] = field(default_factory=list)
    refunded: int = 0

    def freeze(self, held: int, released: int) -> AttemptStatement:
        a = self.assigned
        charged = sum(c.amount_udgpu for c in self.charges)
        return AttemptStatement(
            attempt=a.attempt,
            provider_id=a.provider_id,
            provider_owner=a.provider_owner,
            gpu_indices=list(a.gpu_indices),
            price_udgpu=a.price,
            fee_bps=a.fee_bps,
            assigned_at=a.at,
            started_at=self.started_at,
            ended_at=self.ended_at,
            ended=self.ended,
            gpu_ms=sum(u.gpu_ms for u in self.usage),
            usage=self.usage,
            charges=self.charges,
            held_udgpu=held,
            charged_udgpu=charged,
            uncovered_udgpu=sum(c.uncovered_udgpu for c in self.charges),
            fee_udgpu=sum(c.fee_udgpu for c in self.charges),
            provider_credit_udgpu=sum(c.provider_credit_udgpu for c in self.charges),
            released_udgpu=released,
            hold_udgpu=held - charged - released,
            refunded_udgpu=self.refunded,
            simulated=any(sample.simulated for line in self.usage for sample in line.samples),
        )


class _Fold:
    """Folds a job's events, in log order, into its statement and digest."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.attempts: dict[int, _Attempt] = {}
        self.splits: dict[str, tuple[int, int]] = {}  # charge id -> (credit, fee)
        self.charges: list[tuple[int, ev.FundsCharged]] = []
        self.held: dict[int, int] = {}
        self.released: dict[int, int] = {}
        self.entries: list[StatementEntry] = []
        self.renter = self.name = ""
        self.state = "unknown"
        self.submitted_at: datetime | None = None
        self.ended_at: datetime | None = None
        self.position = 0
        self.link = first_link(job_id)

    def take(self, record: Stored) -> None:
        event = record.event
        payload_sha256 = hashlib.sha256(record.payload).digest()
        self.link = next_link(self.link, record.seq, payload_sha256)
        self.position = record.seq
        self.entries.append(
            StatementEntry(
                seq=record.seq,
                at=event.at,
                type=type(event).__name__,
                subject=record.subject,
                attempt=getattr(event, "attempt", None),
                summary=describe(event),
                payload_sha256=payload_sha256.hex(),
                chain=self.link.hex(),
            )
        )
        attempt = self.attempts.get(getattr(event, "attempt", None) or 0)
        match event:
            case ev.JobSubmitted():
                self.renter, self.name = event.renter, event.name
                self.state, self.submitted_at = "queued", event.at
            case ev.JobQueued():
                self.state = "queued"
            case ev.JobAssigned():
                self.attempts[event.attempt] = _Attempt(assigned=event)
                self.state = "assigned"
            case ev.JobStarted() if attempt is not None:
                attempt.started_at = attempt.started_at or event.at
                self.state = "running"
            case ev.UsageRecorded() if attempt is not None:
                attempt.usage.extend(
                    UsageLine(
                        seq=record.seq,
                        tick=tick.seq,
                        ended_at=tick.ended_at,
                        gpu_ms=tick.gpu_ms,
                        samples=list(tick.samples),
                    )
                    for tick in event.ticks
                )
            case ev.JobRequeued():
                self.state = "queued"
                if attempt is not None:
                    attempt.ended, attempt.ended_at = "requeued", event.at
            case ev.JobCompleted() | ev.JobFailed() | ev.JobCancelled() | ev.JobStopped():
                self.state, self.ended_at = _ENDS[type(event)], event.at
                for open_attempt in self.attempts.values():
                    if not open_attempt.ended:
                        open_attempt.ended, open_attempt.ended_at = self.state, event.at
            case ev.FundsHeld():
                # The first hold comes before the assignment, in the same batch.
                self.held[event.attempt] = self.held.get(event.attempt, 0) + event.amount
            case ev.HoldReleased():
                self.released[event.attempt] = self.released.get(event.attempt, 0) + event.amount
            case ev.FundsCharged():
                self.charges.append((record.seq, event))
            case ev.ChargeRefunded() if attempt is not None:
                attempt.refunded += event.amount
            case ev.ProviderCredited():
                credit, fee = self.splits.get(event.charge_id, (0, 0))
                self.splits[event.charge_id] = (credit + event.amount, fee)
            case ev.FeeCollected():
                credit, fee = self.splits.get(event.charge_id, (0, 0))
                self.splits[event.charge_id] = (credit, fee + event.amount)
            case _:
                pass

    def result(self) -> JobStatement:
        for seq, charge in self.charges:
            credit, fee = self.splits.get(charge.event_id, (0, 0))
            attempt = self.attempts.get(charge.attempt)
            if attempt is not None:
                attempt.charges.append(
                    ChargeLine(
                        seq=seq,
                        at=charge.at,
                        usage_seq=charge.usage_seq,
                        total_gpu_ms=charge.total_gpu_ms,
                        amount_udgpu=charge.amount,
                        uncovered_udgpu=charge.uncovered,
                        fee_udgpu=fee,
                        provider_credit_udgpu=credit,
                        provider_wallet=charge.provider_wallet,
                    )
                )
        frozen = [
            self.attempts[n].freeze(self.held.get(n, 0), self.released.get(n, 0))
            for n in sorted(self.attempts)
        ]
        return JobStatement(
            job_id=self.job_id,
            renter=self.renter,
            name=self.name,
            state=self.state,
            submitted_at=self.submitted_at,
            ended_at=self.ended_at,
            attempts=frozen,
            events=self.entries,
            gpu_ms=sum(a.gpu_ms for a in frozen),
            charged_udgpu=sum(a.charged_udgpu for a in frozen),
            uncovered_udgpu=sum(a.uncovered_udgpu for a in frozen),
            fee_udgpu=sum(a.fee_udgpu for a in frozen),
            provider_credit_udgpu=sum(a.provider_credit_udgpu for a in frozen),
            held_udgpu=sum(a.held_udgpu for a in frozen),
            released_udgpu=sum(a.released_udgpu for a in frozen),
            position=self.position,
            digest=self.link.hex(),
            refunded_udgpu=sum(a.refunded_udgpu for a in frozen),
        )


def build_statement(job_id: str, stored: Iterable[Stored]) -> JobStatement:
    """The statement of `job_id` from its events (any order; each sequence counted once)."""
    fold = _Fold(job_id)
    for record in sorted({s.seq: s for s in stored}.values(), key=lambda s: s.seq):
        fold.take(record)
    return fold.result()


async def job_statement(
    store: EventStore, job_id: str, *, to_seq: int | None = None
) -> JobStatement | None:
    """The statement of `job_id` as of `to_seq` (default: now), None if no such job."""
    events = await job_events(store, job_id, to_seq=to_seq)
    if not any(isinstance(s.event, ev.JobSubmitted) for s in events):
        return None
    return build_statement(job_id, events)
