"""The world: every aggregate's state, kept current by applying the log in order.

The handlers and the command service each keep one. Applying is idempotent per aggregate:
an event at or below an aggregate's version is skipped, so a world refreshed out of band
(after a conflict) can go on consuming the log without applying anything twice.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dante.domain.model.job import JobState, evolve_job
from dante.domain.model.market import Market
from dante.domain.model.payment import PaymentState, evolve_payment
from dante.domain.model.provider import ProviderState, evolve_provider
from dante.domain.model.wallet import WalletState, evolve_wallet
from dante.schemas import events as ev

if TYPE_CHECKING:
    from dante.events.codec import Recorded


@dataclass(slots=True)
class AttemptBook:
    """What one job attempt has used and been billed: billing decides against it."""

    job_id: str
    attempt: int
    renter: str
    provider_id: str
    provider_owner: str
    price: int
    fee_bps: int
    gpu_count: int
    max_duration_s: int | None
    recorded_ms: int = 0
    last_usage_seq: int = 0
    billed_ms: int = 0
    charged: int = 0
    uncovered: int = 0
    fees: int = 0

    @property
    def unbilled_ms(self) -> int:
        return self.recorded_ms - self.billed_ms


class World:
    """Providers, jobs and wallets, plus the few indexes the handlers need."""

    def __init__(self, *, remember_causes: int = 0) -> None:
        #: With `remember_causes`, the last few causes of each aggregate are kept, so a
        #: command retried after its events landed is recognised without deciding again.
        self._remember = remember_causes
        self.causes: dict[tuple[str, str], deque[str]] = {}
        self.providers: dict[str, ProviderState] = {}
        self.jobs: dict[str, JobState] = {}
        self.wallets: dict[str, WalletState] = {}
        #: Withdrawals not yet paid nor failed: withdrawal id -> wallet id.
        self.open_payouts: dict[str, str] = {}
        #: Chain transactions credited, by signature.
        self.payments: dict[str, PaymentState] = {}
        #: The highest stream sequence applied.
        self.position = 0
        #: Per provider: attempts completed there, and attempts lost there.
        self.completed: dict[str, int] = {}
        self.lost: dict[str, int] = {}
        #: Jobs waiting for a placement, with their place in the queue (submission sequence).
        self.waiting: dict[str, int] = {}
        #: Jobs whose current attempt holds GPUs of each provider.
        self.placed_on: dict[str, set[str]] = {}
        #: Usage and billing of every job attempt.
        self.books: dict[tuple[str, int], AttemptBook] = {}
        #: The providers' GPUs as slots to place on, kept current as events are applied.
        self.market = Market()

    # ── access ──────────────────────────────────────────────────────────────────────────

    def provider(self, provider_id: str) -> ProviderState:
        return self.providers.get(provider_id) or ProviderState(provider_id=provider_id)

    def job(self, job_id: str) -> JobState:
        return self.jobs.get(job_id) or JobState(job_id=job_id)

    def wallet(self, wallet_id: str) -> WalletState:
        return self.wallets.get(wallet_id) or WalletState(wallet_id=wallet_id)

    def payment(self, signature: str) -> PaymentState:
        return self.payments.get(signature) or PaymentState(signature=signature)

    def reliability_ppm(self, provider_id: str) -> int:
        """Share of attempts completed versus lost, in parts per million (1.0 with none)."""
        done = self.completed.get(provider_id, 0)
        lost = self.lost.get(provider_id, 0)
        return 1_000_000 if done + lost == 0 else done * 1_000_000 // (done + lost)

    def version_of_aggregate(self, aggregate: str, aggregate_id: str) -> int:
        if aggregate == "provider":
            return self.provider(aggregate_id).version
        if aggregate == "job":
            return self.job(aggregate_id).version
        if aggregate == "wallet":
            return self.wallet(aggregate_id).version
        if aggregate == "payment":
            return self.payment(aggregate_id).version
        raise ValueError(f"no aggregate {aggregate!r}")

    def version_of(self, event: ev.Event) -> int:
        match event:
            case ev.ProviderEvent():
                return self.provider(event.provider_id).version
            case ev.JobEvent():
                return self.job(event.job_id).version
            case ev.WalletEvent():
                return self.wallet(event.wallet_id).version
            case ev.PaymentEvent():
                return self.payment(event.signature).version
        raise TypeError(f"{type(event).__name__} belongs to no aggregate")

    # ── applying ────────────────────────────────────────────────────────────────────────

    def apply(self, recorded: Recorded) -> bool:
        """Apply one event from the log; False when its aggregate already had it."""
        self.position = max(self.position, recorded.seq)
        return self.apply_event(recorded.event, recorded.seq)

    def apply_event(self, event: ev.Event, seq: int) -> bool:
        applied = self._evolve(event, seq)
        if applied and self._remember:
            key = (event.AGGREGATE, event.aggregate_id)
            causes = self.causes.get(key)
            if causes is None:
                causes = self.causes[key] = deque(maxlen=self._remember)
            if not causes or causes[-1] != event.cause:
                causes.append(event.cause)
        return applied

    def saw_cause(self, aggregate: str, aggregate_id: str, cause: str) -> bool:
        causes = self.causes.get((aggregate, aggregate_id))
        return causes is not None and cause in causes

    def _evolve(self, event: ev.Event, seq: int) -> bool:
        match event:
            case ev.ProviderEvent():
                provider = self.provider(event.provider_id)
                if seq <= provider.version:
                    return False
                self.providers[event.provider_id] = evolve_provider(provider, event, seq)
                self.market.touch(event.provider_id)
            case ev.JobEvent():
                job = self.job(event.job_id)
                if seq <= job.version:
                    return False
                after = evolve_job(job, event, seq)
                self.jobs[event.job_id] = after
                self._index_job(job, after, event)
                self._book_usage(after, event, seq)
            case ev.WalletEvent():
                wallet = self.wallet(event.wallet_id)
                if seq <= wallet.version:
                    return False
                self.wallets[event.wallet_id] = evolve_wallet(wallet, event, seq)
                self._book_money(event)
            case ev.PaymentEvent():
                payment = self.payment(event.signature)
                if seq <= payment.version:
                    return False
                self.payments[event.signature] = evolve_payment(payment, event, seq)
            case _:
                raise TypeError(f"{type(event).__name__} belongs to no aggregate")
        return True

    def _book_money(self, event: ev.WalletEvent) -> None:
        match event:
            case ev.WithdrawalRequested():
                self.open_payouts[event.withdrawal_id] = event.wallet_id
            case ev.FundsWithdrawn() | ev.WithdrawalFailed():
                self.open_payouts.pop(event.withdrawal_id, None)
            case ev.FundsCharged():
                book = self.books.get((event.job_id, event.attempt))
                if book is not None:
                    book.billed_ms = max(book.billed_ms, event.total_gpu_ms)
                    book.charged += event.amount
                    book.uncovered += event.uncovered
            case ev.FeeCollected():
                book = self.books.get((event.job_id, event.attempt))
                if book is not None:
                    book.fees += event.amount
            case _:
                pass

    def _book_usage(self, after: JobState, event: ev.Event, seq: int) -> None:
        match event:
            case ev.JobAssigned():
                self.books[(event.job_id, event.attempt)] = AttemptBook(
                    job_id=event.job_id,
                    attempt=event.attempt,
                    renter=after.renter,
                    provider_id=event.provider_id,
                    provider_owner=event.provider_owner,
                    price=event.price,
                    fee_bps=event.fee_bps,
                    gpu_count=len(event.gpu_indices),
                    max_duration_s=(
                        after.requirements.max_duration_s if after.requirements else None
                    ),
                )
            case ev.UsageRecorded():
                book = self.books.get((event.job_id, event.attempt))
                if book is not None:
                    book.recorded_ms += event.gpu_ms
                    book.last_usage_seq = seq
            case _:
                pass

    def _index_job(self, before: JobState, after: JobState, event: ev.Event) -> None:
        if after.status == "queued":
            self.waiting[after.job_id] = after.submitted_seq
        else:
            self.waiting.pop(after.job_id, None)
        if before.placed and (not after.placed or before.provider_id != after.provider_id):
            self.placed_on.get(before.provider_id, set()).discard(after.job_id)
        if after.placed:
            self.placed_on.setdefault(after.provider_id, set()).add(after.job_id)
        if isinstance(event, ev.JobCompleted) and before.provider_id:
            self.completed[before.provider_id] = self.completed.get(before.provider_id, 0) + 1
            self.market.touch(before.provider_id)
        elif isinstance(event, ev.JobRequeued):
            self.lost[event.provider_id] = self.lost.get(event.provider_id, 0) + 1
            self.market.touch(event.provider_id)
