"""A wallet: what an account (or the platform) has available, holds per job, withdrawals."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec
from msgspec.structs import replace

from dante.schemas import events as ev
from dante.schemas.money import periods

HoldKey = tuple[str, int]  # (job_id, attempt)
#: Which budget limits what may be held ("" when the balance does).
Budget = Literal["", "daily", "monthly"]


class PayoutState(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """A withdrawal on its way: what to pay, where, and its latest signed transaction."""

    withdrawal_id: str
    amount: int
    address: str
    requested_at: datetime
    signature: str | None = None
    transaction: str = ""
    last_valid_block_height: int = 0
    attempt: int = 0


class WalletState(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    wallet_id: str
    version: int = 0
    role: Literal["renter", "provider"] | None = None
    available: int = 0
    holds: dict[HoldKey, int] = msgspec.field(default_factory=dict)
    pending_withdrawals: dict[str, int] = msgspec.field(default_factory=dict)
    #: The pending withdrawals' payouts, by withdrawal id.
    payouts: dict[str, PayoutState] = msgspec.field(default_factory=dict)
    deposited: int = 0
    withdrawn: int = 0
    charged: int = 0
    earned: int = 0
    #: Open low-funds warnings: when each job attempt will be stopped.
    warnings: dict[HoldKey, datetime] = msgspec.field(default_factory=dict)
    #: Credits (providers) of attempts that may still be lost and so reversed: not yet
    #: withdrawable. Gone at `EarningsSettled` or `CreditReversed`.
    reversible: dict[HoldKey, int] = msgspec.field(default_factory=dict)
    #: The renter's spending caps (`BudgetSet`), per UTC day and calendar month.
    budget_daily: int | None = None
    budget_monthly: int | None = None
    #: What was charged (less refunds) in the UTC day and month of the last charge:
    #: (period, amount), the period "YYYY-MM-DD" or "YYYY-MM".
    spent_day: tuple[str, int] = ("", 0)
    spent_month: tuple[str, int] = ("", 0)

    @property
    def held(self) -> int:
        return sum(self.holds.values())

    @property
    def pending(self) -> int:
        return sum(self.pending_withdrawals.values())

    def hold(self, job_id: str, attempt: int) -> int:
        return self.holds.get((job_id, attempt), 0)

    def spent(self, now: datetime) -> tuple[int, int]:
        """What was charged (less refunds) in `now`'s UTC day and calendar month."""
        day, month = periods(now)
        return (
            self.spent_day[1] if self.spent_day[0] == day else 0,
            self.spent_month[1] if self.spent_month[0] == month else 0,
        )

    def spendable(self, now: datetime) -> tuple[int, Budget]:
        """What may be held now: the available balance, or less where a budget is nearer.

        A budget counts what the period's charges took and every open hold (what is held
        is as good as spent), so holding `spendable` more never lets the period's charges
        pass the cap. Returns the amount and which budget binds ("" when the balance does).
        """
        best: int = self.available
        which: Budget = ""
        if self.budget_daily is None and self.budget_monthly is None:
            return best, which
        day, month = self.spent(now)
        caps: tuple[tuple[Budget, int | None, int], ...] = (
            ("daily", self.budget_daily, day),
            ("monthly", self.budget_monthly, month),
        )
        for name, cap, spent in caps:
            if cap is not None and cap - spent - self.held < best:
                best, which = max(0, cap - spent - self.held), name
        return best, which


def _add_spend(state: WalletState, at: datetime, delta: int) -> dict[str, tuple[str, int]]:
    """The spend counters after charging (or refunding, `delta` < 0) at `at`."""
    day, month = periods(at)
    old_day = state.spent_day[1] if state.spent_day[0] == day else 0
    old_month = state.spent_month[1] if state.spent_month[0] == month else 0
    return {
        "spent_day": (day, max(0, old_day + delta)),
        "spent_month": (month, max(0, old_month + delta)),
    }


def _with_hold(holds: dict[HoldKey, int], key: HoldKey, delta: int) -> dict[HoldKey, int]:
    updated = dict(holds)
    amount = updated.get(key, 0) + delta
    if amount:
        updated[key] = amount
    else:
        updated.pop(key, None)
    return updated


def evolve_wallet(state: WalletState, event: ev.Event, seq: int) -> WalletState:
    """The wallet after `event`, appended at stream sequence `seq`."""
    match event:
        case ev.AccountOpened():
            return replace(state, version=seq, role=event.role)
        case ev.FundsDeposited():
            return replace(
                state,
                version=seq,
                available=state.available + event.amount,
                deposited=state.deposited + event.amount,
            )
        case ev.FundsHeld():
            key = (event.job_id, event.attempt)
            return replace(
                state,
                version=seq,
                available=state.available - event.amount,
                holds=_with_hold(state.holds, key, event.amount),
                # A renewed hold answers an open low-funds warning.
                warnings={k: v for k, v in state.warnings.items() if k != key},
            )
        case ev.FundsCharged():
            key = (event.job_id, event.attempt)
            return replace(
                state,
                version=seq,
                holds=_with_hold(state.holds, key, -event.amount),
                charged=state.charged + event.amount,
                **_add_spend(state, event.at, event.amount),
            )
        case ev.ChargeRefunded():
            return replace(
                state,
                version=seq,
                available=state.available + event.amount,
                charged=state.charged - event.amount,
                **_add_spend(state, event.at, -event.amount),
            )
        case ev.CreditReversed():
            key = (event.job_id, event.attempt)
            return replace(
                state,
                version=seq,
                available=state.available - event.amount,
                earned=state.earned - event.amount,
                reversible={k: v for k, v in state.reversible.items() if k != key},
            )
        case ev.LowFundsCleared():
            key = (event.job_id, event.attempt)
            warnings = {k: v for k, v in state.warnings.items() if k != key}
            return replace(state, version=seq, warnings=warnings)
        case ev.BudgetSet():
            return replace(
                state, version=seq, budget_daily=event.daily, budget_monthly=event.monthly
            )
        case ev.ProviderCredited():
            key = (event.job_id, event.attempt)
            reversible = dict(state.reversible)
            reversible[key] = reversible.get(key, 0) + event.amount
            return replace(
                state,
                version=seq,
                available=state.available + event.amount,
                earned=state.earned + event.amount,
                reversible=reversible,
            )
        case ev.FeeCollected():
            return replace(
                state,
                version=seq,
                available=state.available + event.amount,
                earned=state.earned + event.amount,
            )
        case ev.EarningsSettled():
            key = (event.job_id, event.attempt)
            reversible = {k: v for k, v in state.reversible.items() if k != key}
            return replace(state, version=seq, reversible=reversible)
        case ev.HoldReleased():
            key = (event.job_id, event.attempt)
            warnings = {k: v for k, v in state.warnings.items() if k != key}
            return replace(
                state,
                version=seq,
                available=state.available + event.amount,
                holds=_with_hold(state.holds, key, -event.amount),
                warnings=warnings,
            )
        case ev.LowFundsWarned():
            warnings = dict(state.warnings)
            warnings[(event.job_id, event.attempt)] = event.stop_at
            return replace(state, version=seq, warnings=warnings)
        case ev.WithdrawalRequested():
            pending = dict(state.pending_withdrawals)
            pending[event.withdrawal_id] = pending.get(event.withdrawal_id, 0) + event.amount
            payouts = dict(state.payouts)
            payouts[event.withdrawal_id] = PayoutState(
                withdrawal_id=event.withdrawal_id,
                amount=event.amount,
                address=event.payout_address,
                requested_at=event.at,
            )
            return replace(
                state,
                version=seq,
                available=state.available - event.amount,
                pending_withdrawals=pending,
                payouts=payouts,
            )
        case ev.PayoutSigned():
            payouts = dict(state.payouts)
            payout = payouts.get(event.withdrawal_id)
            if payout is not None:
                payouts[event.withdrawal_id] = replace(
                    payout,
                    signature=event.signature,
                    transaction=event.transaction,
                    last_valid_block_height=event.last_valid_block_height,
                    attempt=event.attempt,
                )
            return replace(state, version=seq, payouts=payouts)
        case ev.FundsWithdrawn():
            pending = dict(state.pending_withdrawals)
            pending.pop(event.withdrawal_id, None)
            payouts = {k: v for k, v in state.payouts.items() if k != event.withdrawal_id}
            return replace(
                state,
                version=seq,
                pending_withdrawals=pending,
                payouts=payouts,
                withdrawn=state.withdrawn + event.amount,
            )
        case ev.WithdrawalFailed():
            pending = dict(state.pending_withdrawals)
            returned = pending.pop(event.withdrawal_id, 0)
            payouts = {k: v for k, v in state.payouts.items() if k != event.withdrawal_id}
            return replace(
                state,
                version=seq,
                available=state.available + returned,
                pending_withdrawals=pending,
                payouts=payouts,
            )
        case _:
            raise TypeError(f"{type(event).__name__} is not a wallet event")
