"""The world: every aggregate's state, kept current by applying the log in order.

The handlers and the command service each keep one. Applying is idempotent per aggregate:
an event at or below an aggregate's version is skipped, so a world refreshed out of band
(after a conflict) can go on consuming the log without applying anything twice.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import msgspec
from msgspec.structs import replace

from dante.domain.model.job import JobState, evolve_job
from dante.domain.model.market import Market
from dante.domain.model.payment import PaymentState, evolve_payment
from dante.domain.model.provider import ProviderState, evolve_provider
from dante.domain.model.wallet import WalletState, evolve_wallet
from dante.schemas import events as ev

if TYPE_CHECKING:
    from dante.events.codec import Recorded


class AttemptBook(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """What one job attempt has used and been billed: billing decides against it.

    Immutable, like the aggregates' states: an event replaces the book, so a snapshot of the
    world (`dante.domain.model.snapshot`) may hold the books as they are, while the world
    goes on."""

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
    #: Lost to its provider (requeued, or the job gave up after it): it costs nothing, so
    #: it is charged no more and what it was charged is refunded.
    lost: bool = False
    #: Given back to the renter.
    refunded: int = 0
    #: The stop grace billed after a cancel (`JobAssigned.stop_grace_s`), when the attempt
    #: started, and when its cancel was asked.
    stop_grace_s: int | None = None
    started_at: datetime | None = None
    cancel_asked_at: datetime | None = None

    @property
    def unbilled_ms(self) -> int:
        return self.recorded_ms - self.billed_ms

    def billable(self, total_ms: int) -> int:
        """The part of `total_ms` GPU time that is billed: all of it, unless the attempt ran
        on after its cancel was asked, where it is capped at the time until the cancel plus
        the stop grace, on each of its GPUs."""
        if self.stop_grace_s is None or self.cancel_asked_at is None:
            return total_ms
        ran = (
            self.cancel_asked_at - self.started_at if self.started_at is not None else timedelta(0)
        )
        until_ms = max(0, int(ran.total_seconds() * 1000)) + self.stop_grace_s * 1000
        return min(total_ms, until_ms * self.gpu_count)


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
        #: Each account's machines that are registered (online or offline, not deregistered).
        self.machines_of: dict[str, set[str]] = {}
        #: The settings recorded last (`SettingsChanged`), and its sequence (0: none yet).
        self.settings: ev.SettingsChanged | None = None
        self.settings_version = 0

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

    def _lost(self, key: tuple[str, int]) -> None:
        book = self.books.get(key)
        if book is not None:
            self.books[key] = replace(book, lost=True)

    def version_of_aggregate(self, aggregate: str, aggregate_id: str) -> int:
        if aggregate == "provider":
            return self.provider(aggregate_id).version
        if aggregate == "job":
            return self.job(aggregate_id).version
        if aggregate == "wallet":
            return self.wallet(aggregate_id).version
        if aggregate == "platform":
            return self.settings_version
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
            case ev.PlatformEvent():
                return self.settings_version
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
                after_provider = evolve_provider(provider, event, seq)
                self.providers[event.provider_id] = after_provider
                self.market.touch(event.provider_id)
                self.index_machine(after_provider)
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
            case ev.SettingsChanged():
                if seq <= self.settings_version:
                    return False
                self.settings, self.settings_version = event, seq
            case ev.PaymentEvent():
                payment = self.payment(event.signature)
                if seq <= payment.version:
                    return False
                self.payments[event.signature] = evolve_payment(payment, event, seq)
            case _:
                raise TypeError(f"{type(event).__name__} belongs to no aggregate")
        return True

    def index_machine(self, provider: ProviderState) -> None:
        """Count `provider` among its owner's machines (or no longer), from its state."""
        machines = self.machines_of.setdefault(provider.owner, set())
        if provider.status in ("online", "offline"):
            machines.add(provider.provider_id)
        else:
            machines.discard(provider.provider_id)
            if not machines:
                del self.machines_of[provider.owner]

    def machines(self, owner: str) -> int:
        """How many machines `owner` has registered."""
        found = self.machines_of.get(owner)
        return 0 if found is None else len(found)

    def _book_money(self, event: ev.WalletEvent) -> None:
        match event:
            case ev.WithdrawalRequested():
                self.open_payouts[event.withdrawal_id] = event.wallet_id
            case ev.FundsWithdrawn() | ev.WithdrawalFailed():
                self.open_payouts.pop(event.withdrawal_id, None)
            case ev.FundsCharged():
                key = (event.job_id, event.attempt)
                book = self.books.get(key)
                if book is not None:
                    self.books[key] = replace(
                        book,
                        billed_ms=max(book.billed_ms, event.total_gpu_ms),
                        charged=book.charged + event.amount,
                        uncovered=book.uncovered + event.uncovered,
                    )
            case ev.FeeCollected():
                key = (event.job_id, event.attempt)
                book = self.books.get(key)
                if book is not None:
                    self.books[key] = replace(book, fees=book.fees + event.amount)
            case ev.ChargeRefunded():
                key = (event.job_id, event.attempt)
                book = self.books.get(key)
                if book is not None:
                    self.books[key] = replace(book, refunded=book.refunded + event.amount)
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
                    stop_grace_s=event.stop_grace_s,
                )
            case ev.JobRequeued():
                self._lost((event.job_id, event.attempt))
            case ev.JobFailed() if event.lost:
                self._lost((event.job_id, event.attempt or after.attempt))
            case ev.JobStarted():
                key = (event.job_id, event.attempt)
                book = self.books.get(key)
                if book is not None:
                    self.books[key] = replace(book, started_at=event.at)
            case ev.JobCancelRequested():
                key = (event.job_id, after.attempt)
                book = self.books.get(key)
                if book is not None and after.placed:
                    self.books[key] = replace(book, cancel_asked_at=event.at)
            case ev.UsageRecorded():
                key = (event.job_id, event.attempt)
                book = self.books.get(key)
                if book is not None:
                    self.books[key] = replace(
                        book, recorded_ms=book.recorded_ms + event.gpu_ms, last_usage_seq=seq
                    )
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
