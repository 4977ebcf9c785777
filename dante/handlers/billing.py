"""Billing: charges usage against holds, renews and warns, stops, releases, pays out.

Money rules (DESIGN.md, and docs/design.md for the rounding rule):
- A charge is `cost(price, total_ms) - cost(price, billed_ms)` of the attempt's running
  GPU time, at the price fixed when the attempt was placed, never more than what is left of
  its hold; what the hold cannot cover is recorded as `uncovered` and never charged.
- The fee is `fee_of(charged_total, fee_bps) - fees_so_far`; the provider gets the rest.
  Charge, credit and fee land as one atomic batch.
- Jobs without a maximum duration hold a rolling window; when less than half of a window
  is left it is renewed, or, when the renter cannot afford it, `LowFundsWarned`, and after
  the grace period `JobStopped` (insufficient funds). A deposit renews it.
- When an attempt ends (completed, failed, cancelled, stopped) whatever usage is still
  unbilled is charged and the rest of its hold is released, in one batch; an open low-funds
  warning of the attempt is cleared with it (`LowFundsCleared` when no release answers it).
- An attempt lost to its provider (requeued, or the last one of a job that gave up) costs
  nothing: it is charged no more, and what it was charged is refunded (`ChargeRefunded`,
  with the provider's credit and the platform's fee reversed, `CreditReversed`) in the
  batch that releases its hold.
- After a cancel is asked, usage is billable only up to the cancel plus the attempt's stop
  grace (`AttemptBook.billable`); the rest is recorded and never charged.
- A renter's budgets (`BudgetSet`) limit what may be held like the balance does
  (`WalletState.spendable`): a rolling hold the budget cannot renew warns, and the job stops
  after the grace period with `budget_reached`. A raised budget, a deposit, or a new day or
  month renews warned holds.
- Decisions are level-based: they bring an attempt's billing up to date with its recorded
  usage, so the order in which triggers arrive does not matter.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Final

from dante.domain.decision import Decision
from dante.domain.model import WalletState, World, evolve_wallet
from dante.domain.model.world import AttemptBook
from dante.domain.settings import Settings
from dante.events.codec import Recorded
from dante.events.records import Append
from dante.events.subjects import subject_of
from dante.schemas import events as ev
from dante.schemas.money import cost, fee_of
from dante.schemas.values import PLATFORM_WALLET

NAME: Final = "billing"


#: The most attempts one renter's merged usage step charges (each up to four events).
_ATTEMPTS_PER_STEP: Final = 100


class Billing:
    name = NAME
    #: Acts on the whole log.
    subjects: str | None = None
    #: The event types `decide` acts on; the runner acknowledges others unread.
    triggers = frozenset(
        kind.__name__
        for kind in (
            ev.UsageRecorded,
            ev.JobRequeued,
            ev.JobCompleted,
            ev.JobFailed,
            ev.JobCancelled,
            ev.JobStopped,
            ev.FundsDeposited,
            ev.BudgetSet,
        )
    )

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()

    # ── triggers ────────────────────────────────────────────────────────────────────────

    def decide(self, world: World, recorded: Recorded, now: datetime) -> Iterator[Decision]:
        event = recorded.event
        match event:
            case ev.UsageRecorded():
                book = world.books.get((event.job_id, event.attempt))
                if book is not None:
                    yield from self._bring_up_to_date(world, book, now)
            case ev.JobRequeued():
                yield from self._settle(world, event.job_id, [event.attempt], now)
            case ev.JobCompleted() | ev.JobFailed() | ev.JobCancelled() | ev.JobStopped():
                job = world.job(event.job_id)
                yield from self._settle(world, event.job_id, list(range(1, job.attempt + 1)), now)
            case ev.FundsDeposited() | ev.BudgetSet():
                yield from self._renew_warned(world, event.wallet_id, now)
            case _:
                return

    def decide_many(
        self, world: World, triggers: Sequence[Recorded], now: datetime
    ) -> Iterator[Decision]:
        """The steps of triggers fetched together, the usage charges merged per renter.

        Every decision here is level-based and the world has reached the last trigger, so
        each attempt with new usage is brought up to date once, however many of its usage
        events came, and all of a renter's attempts go in one step: its wallet is checked
        once, at the first event, and each attempt is decided against the wallet as the
        attempts before it in the step leave it. Other triggers follow, one by one. The
        runner appends steps of different renters together (see `dante.handlers.runner`).
        """
        by_renter: dict[str, list[AttemptBook]] = {}
        seen: set[tuple[str, int]] = set()
        rest: list[Recorded] = []
        for recorded in triggers:
            event = recorded.event
            if not isinstance(event, ev.UsageRecorded):
                rest.append(recorded)
                continue
            key = (event.job_id, event.attempt)
            book = world.books.get(key)
            if book is not None and key not in seen:
                seen.add(key)
                by_renter.setdefault(book.renter, []).append(book)
        for renter, books in by_renter.items():
            yield from self._charge_renter(world, renter, books, now)
        for recorded in rest:
            yield from self.decide(world, recorded, now)

    # ── time ────────────────────────────────────────────────────────────────────────────

    def due(self, world: World, now: datetime) -> Iterator[Decision]:
        """Stop jobs whose grace period ran out, and jobs past their maximum duration.

        A warned hold is renewed first where a new day or month left room in the budget.
        """
        for wallet_id, wallet in list(world.wallets.items()):
            if not wallet.warnings:
                continue
            if wallet.budget_daily is not None or wallet.budget_monthly is not None:
                yield from self._renew_warned(world, wallet_id, now)
                wallet = world.wallet(wallet_id)  # noqa: PLW2901 (as the renewals left it)
            _, budget = wallet.spendable(now)
            for (job_id, attempt), stop_at in list(wallet.warnings.items()):
                job = world.job(job_id)
                if now >= stop_at and job.placed and job.attempt == attempt:
                    if budget:
                        code: ev.StopCode = "budget_reached"
                        reason = (
                            f"the {budget} budget of {wallet_id} is reached: the hold could "
                            f"not be renewed within it in the {self.settings.grace_s}s grace "
                            "period"
                        )
                    else:
                        code = "insufficient_funds"
                        reason = (
                            f"funds ran out: the hold could not be renewed from {wallet_id}'s "
                            f"wallet within the {self.settings.grace_s}s grace period"
                        )
                    yield self._stop(
                        job_id=job_id,
                        attempt=attempt,
                        version=job.version,
                        code=code,
                        reason=reason,
                        now=now,
                    )
        for job_ids in list(world.placed_on.values()):
            for job_id in sorted(job_ids):
                job = world.job(job_id)
                limit = job.requirements.max_duration_s if job.requirements else None
                if (
                    limit is not None
                    and job.status == "running"
                    and job.started_at is not None
                    and now - job.started_at
                    > timedelta(seconds=limit + self.settings.usage_slack_ms / 1000)
                ):
                    reason = f"reached its maximum duration of {limit}s"
                    yield self._stop(
                        job_id=job_id,
                        attempt=job.attempt,
                        version=job.version,
                        code="max_duration",
                        reason=reason,
                        now=now,
                    )

    # ── decisions ───────────────────────────────────────────────────────────────────────

    def _stop(
        self,
        *,
        job_id: str,
        attempt: int,
        version: int,
        code: ev.StopCode,
        reason: str,
        now: datetime,
    ) -> Decision:
        event = ev.JobStopped(
            event_id=f"{NAME}:stop:{job_id}:{attempt}",
            at=now,
            cause=f"timer:{code}",
            job_id=job_id,
            attempt=attempt,
            code=code,
            reason=reason,
        )
        return Decision(appends=[Append(event=event, expected=version)])

    def _charge_events(
        self, wallet: WalletState, book: AttemptBook, now: datetime, base: str
    ) -> tuple[list[Append], int]:
        """The charge of the attempt's unbilled usage, and the hold left after it."""
        hold = wallet.hold(book.job_id, book.attempt)
        if book.unbilled_ms <= 0 or book.lost:
            return [], hold
        billable = book.billable(book.recorded_ms)
        owed = cost(book.price, billable) - cost(book.price, book.billable(book.billed_ms))
        amount = min(owed, hold)
        fee = fee_of(book.charged + amount, book.fee_bps) - book.fees
        cause = f"seq:{book.last_usage_seq}"
        charge = ev.FundsCharged(
            event_id=f"{base}:charge",
            at=now,
            cause=cause,
            wallet_id=book.renter,
            job_id=book.job_id,
            attempt=book.attempt,
            amount=amount,
            usage_seq=book.last_usage_seq,
            total_gpu_ms=book.recorded_ms,
            price=book.price,
            fee_bps=book.fee_bps,
            provider_wallet=book.provider_owner,
            uncovered=owed - amount,
            billable_gpu_ms=None if billable == book.recorded_ms else billable,
        )
        credit = ev.ProviderCredited(
            event_id=f"{base}:credit",
            at=now,
            cause=cause,
            wallet_id=book.provider_owner,
            job_id=book.job_id,
            attempt=book.attempt,
            amount=amount - fee,
            charge_id=charge.event_id,
        )
        platform = ev.FeeCollected(
            event_id=f"{base}:fee",
            at=now,
            cause=cause,
            wallet_id=PLATFORM_WALLET,
            job_id=book.job_id,
            attempt=book.attempt,
            amount=fee,
            charge_id=charge.event_id,
        )
        return [
            Append(event=charge, expected=wallet.version),
            Append(event=credit),
            Append(event=platform),
        ], hold - amount

    def _window(self, book: AttemptBook) -> int:
        return cost(book.price * book.gpu_count, self.settings.hold_window_s * 1000)

    def _bring_up_to_date(
        self, world: World, book: AttemptBook, now: datetime
    ) -> Iterator[Decision]:
        appends = self._usage_appends(world, world.wallet(book.renter), book, now)
        if appends:
            yield Decision(appends=appends)

    def _usage_appends(
        self, world: World, wallet: WalletState, book: AttemptBook, now: datetime
    ) -> list[Append]:
        """Charge the attempt's new usage and renew its hold, against `wallet`."""
        job = world.job(book.job_id)
        current = job.attempt == book.attempt and job.placed
        base = f"{NAME}:{book.job_id}:{book.attempt}:{book.recorded_ms}"
        appends, left = self._charge_events(wallet, book, now, base)
        if current and book.max_duration_s is None:
            appends.extend(self._renewal(wallet, book, left, now, base, checked=not appends))
        return appends

    def _charge_renter(
        self, world: World, renter: str, books: list[AttemptBook], now: datetime
    ) -> Iterator[Decision]:
        """One step for all of a renter's attempts (in chunks), its wallet checked once."""
        wallet = world.wallet(renter)
        subject = subject_of("wallet", renter)
        appends: list[Append] = []
        attempts = 0
        for book in books:
            mine = self._usage_appends(world, wallet, book, now)
            if not mine:
                continue
            for item in mine:
                event = item.event
                if item.subject == subject:
                    if any(a.subject == subject for a in appends):
                        item = Append(event=event, expected=None)  # noqa: PLW2901 (the first carries the check)
                    assert isinstance(event, ev.WalletEvent)
                    # The attempts after this one are decided against the wallet it leaves.
                    wallet = evolve_wallet(wallet, event, wallet.version)
                appends.append(item)
            attempts += 1
            if attempts >= _ATTEMPTS_PER_STEP:
                yield Decision(appends=appends)
                appends, attempts = [], 0
        if appends:
            yield Decision(appends=appends)

    def _renewal(
        self,
        wallet: WalletState,
        book: AttemptBook,
        left: int,
        now: datetime,
        base: str,
        *,
        checked: bool,
    ) -> list[Append]:
        """Renew the rolling hold when less than half a window is left, or warn."""
        window = self._window(book)
        if window == 0 or left * 2 >= window:
            return []
        key = (book.job_id, book.attempt)
        # When the renewal follows a charge in the same batch, the charge carries the check.
        expected = wallet.version if checked else None
        spendable, budget = wallet.spendable(now)
        if spendable >= window:
            held = ev.FundsHeld(
                event_id=f"{base}:renew",
                at=now,
                cause=f"seq:{book.last_usage_seq}",
                wallet_id=book.renter,
                job_id=book.job_id,
                attempt=book.attempt,
                amount=window,
            )
            return [Append(event=held, expected=expected)]
        if key in wallet.warnings:
            return []
        warned = ev.LowFundsWarned(
            event_id=f"{base}:warn",
            at=now,
            cause=f"seq:{book.last_usage_seq}",
            wallet_id=book.renter,
            job_id=book.job_id,
            attempt=book.attempt,
            needed=window,
            available=max(0, spendable),
            stop_at=now + timedelta(seconds=self.settings.grace_s),
            budget=budget,
        )
        return [Append(event=warned, expected=expected)]

    def _renew_warned(self, world: World, wallet_id: str, now: datetime) -> Iterator[Decision]:
        for job_id, attempt in sorted(world.wallet(wallet_id).warnings):
            book = world.books.get((job_id, attempt))
            job = world.job(job_id)
            if book is None or not (job.placed and job.attempt == attempt):
                continue
            wallet = world.wallet(wallet_id)
            window = self._window(book)
            if wallet.spendable(now)[0] < window:
                continue
            held = ev.FundsHeld(
                event_id=f"{NAME}:{job_id}:{attempt}:renew-after:{wallet.version}",
                at=now,
                cause=f"seq:{wallet.version}",
                wallet_id=wallet_id,
                job_id=job_id,
                attempt=attempt,
                amount=window,
            )
            yield Decision(appends=[Append(event=held, expected=wallet.version)])

    def _settle(
        self, world: World, job_id: str, attempts: list[int], now: datetime
    ) -> Iterator[Decision]:
        """Bring ended attempts to a close, each in one batch.

        An attempt that ran to its end is charged what it still owes; one lost to its
        provider is refunded what it was charged. Then the rest of its hold is released,
        and an open low-funds warning of it cleared.
        """
        for attempt in attempts:
            book = world.books.get((job_id, attempt))
            if book is None:
                continue
            wallet = world.wallet(book.renter)
            if book.lost:
                base = f"{NAME}:{job_id}:{attempt}:lost:{book.charged}"
                appends = self._refund_events(wallet, book, now, base)
                left = wallet.hold(job_id, attempt)
            else:
                base = f"{NAME}:{job_id}:{attempt}:settle:{book.recorded_ms}"
                appends, left = self._charge_events(wallet, book, now, base)
            checked = not any(a.subject == subject_of("wallet", book.renter) for a in appends)
            cause = f"seq:{world.job(job_id).version}"
            key = (job_id, attempt)
            if not book.lost and (
                key in world.wallet(book.provider_owner).reversible
                or any(isinstance(a.event, ev.ProviderCredited) for a in appends)
            ):
                # Ended as it should: what it earned the provider is final.
                settled = ev.EarningsSettled(
                    event_id=f"{base}:settled",
                    at=now,
                    cause=cause,
                    wallet_id=book.provider_owner,
                    job_id=job_id,
                    attempt=attempt,
                )
                appends.append(Append(event=settled))
            if left > 0:
                released = ev.HoldReleased(
                    event_id=f"{base}:release",
                    at=now,
                    cause=cause,
                    wallet_id=book.renter,
                    job_id=job_id,
                    attempt=attempt,
                    amount=left,
                    reason=f"attempt {attempt} ended",
                )
                appends.append(Append(event=released, expected=wallet.version if checked else None))
            elif (job_id, attempt) in wallet.warnings:
                cleared = ev.LowFundsCleared(
                    event_id=f"{base}:cleared",
                    at=now,
                    cause=cause,
                    wallet_id=book.renter,
                    job_id=job_id,
                    attempt=attempt,
                    reason=f"attempt {attempt} ended",
                )
                appends.append(Append(event=cleared, expected=wallet.version if checked else None))
            if appends:
                yield Decision(appends=appends)

    def _refund_events(
        self, wallet: WalletState, book: AttemptBook, now: datetime, base: str
    ) -> list[Append]:
        """Give back what a lost attempt was charged, taking back its credit and fee."""
        amount = book.charged - book.refunded
        if amount <= 0:
            return []
        cause = f"seq:{book.last_usage_seq}"
        refund = ev.ChargeRefunded(
            event_id=f"{base}:refund",
            at=now,
            cause=cause,
            wallet_id=book.renter,
            job_id=book.job_id,
            attempt=book.attempt,
            amount=amount,
            reason=(
                f"attempt {book.attempt} was lost to provider {book.provider_id}; the job "
                "starts again, so nothing of it is charged"
            ),
        )
        appends = [Append(event=refund, expected=wallet.version)]
        for wallet_id, share, suffix in (
            (book.provider_owner, amount - book.fees, "credit"),
            (PLATFORM_WALLET, book.fees, "fee"),
        ):
            if share > 0:
                reversed_ = ev.CreditReversed(
                    event_id=f"{base}:reverse-{suffix}",
                    at=now,
                    cause=cause,
                    wallet_id=wallet_id,
                    job_id=book.job_id,
                    attempt=book.attempt,
                    amount=share,
                    refund_id=refund.event_id,
                )
                appends.append(Append(event=reversed_))
        return appends
