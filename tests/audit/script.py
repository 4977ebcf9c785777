"""Write histories by hand, the way the platform appends them (legal unless told otherwise).

Each method appends one decision's events as a batch to `script.batches` and returns their
sequences (the log is assumed to start empty). Money follows billing's rules: a charge is
`cost(price, total) - cost(price, billed)`, the fee `fee_of` the running total, the credit
the rest. Keyword overrides let a test tamper with any field of the events it makes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from dante.events.store import EventStore
from dante.schemas import events as ev
from dante.schemas.money import cost, fee_of
from dante.schemas.values import (
    GpuOffer,
    GpuSample,
    JobRequirements,
    ScriptPayload,
    UsageTick,
)
from tests.factories import NOW, SOLANA, gpu
from tests.projections.helpers import append_batches

PRICE = 500_000
FEE_BPS = 500


@dataclass
class _Attempt:
    renter: str
    owner: str
    provider: str
    gpus: list[int]
    price: int
    attempt: int = 1
    hold: int = 0
    recorded: int = 0
    last_usage_seq: int = 0
    billed: int = 0
    charged: int = 0
    fees: int = 0
    ticks: int = 0


@dataclass
class Script:
    at: datetime = NOW
    batches: list[list[ev.Event]] = field(default_factory=list)
    seq: int = 0
    jobs: dict[str, _Attempt] = field(default_factory=dict)
    renters: dict[str, str] = field(default_factory=dict)
    appended: int = 0
    _n: int = 0

    def make(self, cls: type[Any], **fields: Any) -> Any:
        self._n += 1
        fields.setdefault("event_id", f"s-{self._n}")
        fields.setdefault("at", self.at)
        fields.setdefault("cause", "script")
        return cls(**fields)

    def emit(self, *events: ev.Event) -> list[int]:
        self.batches.append(list(events))
        seqs = list(range(self.seq + 1, self.seq + len(events) + 1))
        self.seq += len(events)
        return seqs

    def later(self, seconds: float) -> Script:
        self.at += timedelta(seconds=seconds)
        return self

    async def append_to(self, store: EventStore) -> int:
        """Append the batches not appended yet, each atomically."""
        last = await append_batches(store, self.batches[self.appended :])
        self.appended = len(self.batches)
        return last

    # ── wallets and providers ───────────────────────────────────────────────────────────

    def deposit(self, wallet: str, amount: int) -> list[int]:
        return self.emit(self.make(ev.FundsDeposited, wallet_id=wallet, amount=amount))

    def register(self, provider: str, owner: str, n: int, price: int = PRICE) -> list[int]:
        return self.emit(
            self.make(
                ev.ProviderRegistered,
                provider_id=provider,
                owner=owner,
                name=provider,
                payout_address=SOLANA,
                gpus=[gpu(i) for i in range(n)],
                offers=[GpuOffer(index=i, price=price) for i in range(n)],
            )
        )

    # ── jobs ────────────────────────────────────────────────────────────────────────────

    def submit(self, job: str, renter: str, max_price: int | None = None) -> list[int]:
        self.renters[job] = renter
        return self.emit(
            self.make(
                ev.JobSubmitted,
                job_id=job,
                renter=renter,
                requirements=JobRequirements(gpu_count=1, max_price=max_price),
                payload=ScriptPayload(script="print(1)"),
            )
        )

    def assign(
        self,
        job: str,
        provider: str,
        owner: str,
        gpus: list[int],
        hold: int,
        *,
        reserve: bool = True,
        **overrides: Any,
    ) -> list[int]:
        renter = self.renters[job]
        previous = self.jobs.get(job)
        attempt = previous.attempt + 1 if previous else 1
        terms: dict[str, Any] = {"price": PRICE, "provider_owner": owner, "gpu_indices": gpus}
        terms |= overrides
        self.jobs[job] = _Attempt(
            renter=renter,
            owner=terms["provider_owner"],
            provider=provider,
            gpus=gpus,
            price=terms["price"],
            attempt=attempt,
            hold=hold,
        )
        events: list[ev.Event] = []
        if reserve:
            events.append(
                self.make(
                    ev.GpusReserved,
                    provider_id=provider,
                    job_id=job,
                    attempt=attempt,
                    gpu_indices=gpus,
                )
            )
        if hold:
            events.append(
                self.make(ev.FundsHeld, wallet_id=renter, job_id=job, attempt=attempt, amount=hold)
            )
        events.append(
            self.make(
                ev.JobAssigned,
                job_id=job,
                attempt=attempt,
                provider_id=provider,
                fee_bps=FEE_BPS,
                hold=hold,
                **terms,
            )
        )
        return self.emit(*events)

    def start(self, job: str) -> list[int]:
        return self.emit(self.make(ev.JobStarted, job_id=job, attempt=self.jobs[job].attempt))

    def usage(self, job: str, ms: int) -> list[int]:
        state = self.jobs[job]
        state.ticks += 1
        tick = UsageTick(
            seq=state.ticks,
            ended_at=self.at,
            samples=[GpuSample(index=state.gpus[0], gpu_ms=ms, utilization_pct=95, power_w=300)],
        )
        seqs = self.emit(
            self.make(ev.UsageRecorded, job_id=job, attempt=state.attempt, ticks=[tick])
        )
        state.recorded += ms
        state.last_usage_seq = seqs[0]
        return seqs

    def charge_events(
        self,
        job: str,
        *,
        charge: dict[str, Any] | None = None,
        credit: dict[str, Any] | None = None,
        fee: dict[str, Any] | None = None,
        total: int | None = None,
    ) -> tuple[ev.FundsCharged, ev.ProviderCredited, ev.FeeCollected]:
        """The legal charge of the unbilled usage (or up to `total` GPU-ms), its credit and
        fee, with fields overridden."""
        state = self.jobs[job]
        total = state.recorded if total is None else total
        owed = cost(state.price, total) - cost(state.price, state.billed)
        amount = min(owed, state.hold)
        fee_amount = fee_of(state.charged + amount, FEE_BPS) - state.fees
        charged = self.make(
            ev.FundsCharged,
            **{
                "wallet_id": state.renter,
                "job_id": job,
                "attempt": state.attempt,
                "amount": amount,
                "usage_seq": state.last_usage_seq,
                "total_gpu_ms": total,
                "price": state.price,
                "fee_bps": FEE_BPS,
                "provider_wallet": state.owner,
                "uncovered": owed - amount,
            }
            | (charge or {}),
        )
        ids = {"job_id": job, "attempt": state.attempt, "charge_id": charged.event_id}
        credited = self.make(
            ev.ProviderCredited,
            **{"wallet_id": state.owner, "amount": amount - fee_amount, **ids} | (credit or {}),
        )
        collected = self.make(
            ev.FeeCollected,
            **{"wallet_id": "platform", "amount": fee_amount, **ids} | (fee or {}),
        )
        state.billed = total
        state.charged += charged.amount
        state.fees += collected.amount
        state.hold -= charged.amount
        return charged, credited, collected

    def charge(self, job: str, **overrides: Any) -> list[int]:
        return self.emit(*self.charge_events(job, **overrides))

    def end(self, job: str, cls: type[Any] = ev.JobCompleted, **fields: Any) -> list[int]:
        return self.emit(self.make(cls, job_id=job, attempt=self.jobs[job].attempt, **fields))

    def release_gpus(self, job: str) -> list[int]:
        state = self.jobs[job]
        return self.emit(
            self.make(
                ev.GpusReleased,
                provider_id=state.provider,
                job_id=job,
                attempt=state.attempt,
                gpu_indices=state.gpus,
            )
        )

    def settle(self, job: str) -> list[int]:
        """What billing appends once an attempt ended: unbilled usage, then the release."""
        state = self.jobs[job]
        events: list[ev.Event] = []
        if state.recorded > state.billed:
            events.extend(self.charge_events(job))
        if state.hold > 0:
            events.append(
                self.make(
                    ev.HoldReleased,
                    wallet_id=state.renter,
                    job_id=job,
                    attempt=state.attempt,
                    amount=state.hold,
                )
            )
            state.hold = 0
        return self.emit(*events) if events else []
