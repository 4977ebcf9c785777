"""Wallets: balances, open holds per job attempt, low-funds warnings, and the ledger.

Every money-moving wallet event adds one ledger entry: its stream sequence, its kind, the
amount, and its signed effect on the wallet's available and held funds. Events are applied as
they are, even when they break a rule (a charge with no hold, a balance going negative), so
an audit sees what the log says rather than what it should have said. Conservation: over all
wallets, available + held + pending withdrawal = deposited - withdrawn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from dante.projections.errors import UnknownEvent
from dante.projections.tables import (
    NOTHING,
    Added,
    Change,
    Changed,
    Changes,
    Key,
    Projection,
    Row,
    Table,
    to_ms,
)
from dante.schemas import events as ev
from dante.schemas.money import periods
from dante.schemas.values import PLATFORM_WALLET

#: Ledger kinds, one per money-moving wallet event.
DEPOSIT: Final = "deposit"
HOLD: Final = "hold"
CHARGE: Final = "charge"
CREDIT: Final = "credit"
FEE: Final = "fee"
RELEASE: Final = "release"
WITHDRAWAL_REQUESTED: Final = "withdrawal_requested"
WITHDRAWAL: Final = "withdrawal"
REFUND: Final = "refund"
REVERSAL: Final = "reversal"
WITHDRAWAL_FAILED: Final = "withdrawal_failed"


class WalletRow(Row, kw_only=True):
    wallet_id: str
    #: renter, provider or platform; a wallet first seen without `AccountOpened` is a renter's.
    role: str = "renter"
    available_udgpu: int = 0
    held_udgpu: int = 0
    pending_withdrawal_udgpu: int = 0
    deposited_udgpu: int = 0
    withdrawn_udgpu: int = 0
    #: Paid for usage (renters).
    charged_udgpu: int = 0
    #: Credited for work (providers) or collected as fees (the platform).
    earned_udgpu: int = 0
    warnings_total: int = 0
    #: Spending caps (`BudgetSet`), and what was charged (less refunds) in the UTC day and
    #: month of the last charge ("YYYY-MM-DD", "YYYY-MM"): a query compares them with now.
    budget_daily_udgpu: int | None = None
    budget_monthly_udgpu: int | None = None
    spent_day: str = ""
    spent_day_udgpu: int = 0
    spent_month: str = ""
    spent_month_udgpu: int = 0
    #: The sequence of the last event that changed this wallet.
    updated_seq: int = 0


class HoldRow(Row, kw_only=True):
    """What is still held for one job attempt; gone once nothing is."""

    wallet_id: str
    job_id: str
    attempt: int
    held_udgpu: int = 0


class WarningRow(Row, kw_only=True):
    """The latest low-funds warning of a job attempt, until funds are held again or released."""

    wallet_id: str
    job_id: str
    attempt: int
    seq: int
    needed_udgpu: int
    available_udgpu: int
    stop_at_ms: int
    at_ms: int
    budget: str = ""


class LedgerRow(Row, kw_only=True):
    seq: int
    wallet_id: str
    kind: str
    amount_udgpu: int
    available_delta_udgpu: int
    held_delta_udgpu: int
    job_id: str | None
    attempt: int | None
    #: The deposit or payout reference, the charge a credit or fee came from, a withdrawal id.
    reference: str
    at_ms: int
    #: The chain transaction of a deposit or a payout.
    signature: str | None = None


WALLETS: Final = Table("wallet_accounts", WalletRow, key=("wallet_id",))
HOLDS: Final = Table("wallet_holds", HoldRow, key=("wallet_id", "job_id", "attempt"))
WARNINGS: Final = Table("wallet_warnings", WarningRow, key=("wallet_id", "job_id", "attempt"))
LEDGER: Final = Table(
    "wallet_ledger", LedgerRow, key=("seq",), append_only=True, indexes=(("wallet_id", "seq"),)
)

HoldKey = tuple[str, str, int]


@dataclass(slots=True)
class WalletView:
    wallets: dict[str, WalletRow] = field(default_factory=dict)
    holds: dict[HoldKey, HoldRow] = field(default_factory=dict)
    warnings: dict[HoldKey, WarningRow] = field(default_factory=dict)

    def get(self, table: str, key: Key) -> Row | None:
        if table == WALLETS.name:
            assert isinstance(key, str)
            return self.wallets.get(key)
        assert isinstance(key, tuple)
        if table == HOLDS.name:
            return self.holds.get(key)
        if table == WARNINGS.name:
            return self.warnings.get(key)
        raise KeyError(table)

    def put(self, table: str, key: Key, row: Row) -> None:
        if isinstance(row, WalletRow):
            self.wallets[row.wallet_id] = row
        elif isinstance(row, HoldRow):
            self.holds[row.wallet_id, row.job_id, row.attempt] = row
        elif isinstance(row, WarningRow):
            self.warnings[row.wallet_id, row.job_id, row.attempt] = row
        else:
            raise TypeError(f"not a wallet row: {row!r} at {table}/{key}")


def _wallet(view: WalletView, wallet_id: str, seq: int) -> WalletRow:
    row = view.wallets.get(wallet_id)
    if row is None:
        role = "platform" if wallet_id == PLATFORM_WALLET else "renter"
        row = view.wallets[wallet_id] = WalletRow(wallet_id=wallet_id, role=role)
    row.updated_seq = seq
    return row


def _entry(
    seq: int,
    event: ev.WalletEvent,
    kind: str,
    amount: int,
    *,
    available: int = 0,
    held: int = 0,
    job_id: str | None = None,
    attempt: int | None = None,
    reference: str = "",
    signature: str | None = None,
) -> Added:
    return Added(
        LEDGER.name,
        LedgerRow(
            seq=seq,
            wallet_id=event.wallet_id,
            kind=kind,
            amount_udgpu=amount,
            available_delta_udgpu=available,
            held_delta_udgpu=held,
            job_id=job_id,
            attempt=attempt,
            reference=reference,
            at_ms=to_ms(event.at),
            signature=signature,
        ),
    )


def _hold(view: WalletView, key: HoldKey, delta: int) -> Changed:
    row = view.holds.get(key)
    if row is None:
        row = view.holds[key] = HoldRow(wallet_id=key[0], job_id=key[1], attempt=key[2])
    row.held_udgpu += delta
    if row.held_udgpu == 0:
        del view.holds[key]
    return Changed(HOLDS.name, key)


def _clear_warning(view: WalletView, key: HoldKey, changes: list[Change]) -> None:
    if view.warnings.pop(key, None) is not None:
        changes.append(Changed(WARNINGS.name, key))


def _held(view: WalletView, seq: int, event: ev.FundsHeld) -> Changes:
    wallet = _wallet(view, event.wallet_id, seq)
    wallet.available_udgpu -= event.amount
    wallet.held_udgpu += event.amount
    key = (event.wallet_id, event.job_id, event.attempt)
    changes: list[Change] = [Changed(WALLETS.name, event.wallet_id), _hold(view, key, event.amount)]
    _clear_warning(view, key, changes)  # funds are set aside again: the warning is answered
    changes.append(
        _entry(
            seq,
            event,
            HOLD,
            event.amount,
            available=-event.amount,
            held=event.amount,
            job_id=event.job_id,
            attempt=event.attempt,
        )
    )
    return changes


def _spend(wallet: WalletRow, event: ev.WalletEvent, delta: int) -> None:
    day, month = periods(event.at)
    before_day = wallet.spent_day_udgpu if wallet.spent_day == day else 0
    before_month = wallet.spent_month_udgpu if wallet.spent_month == month else 0
    wallet.spent_day, wallet.spent_day_udgpu = day, max(0, before_day + delta)
    wallet.spent_month, wallet.spent_month_udgpu = month, max(0, before_month + delta)


def _charged(view: WalletView, seq: int, event: ev.FundsCharged) -> Changes:
    wallet = _wallet(view, event.wallet_id, seq)
    wallet.held_udgpu -= event.amount
    wallet.charged_udgpu += event.amount
    _spend(wallet, event, event.amount)
    key = (event.wallet_id, event.job_id, event.attempt)
    return (
        Changed(WALLETS.name, event.wallet_id),
        _hold(view, key, -event.amount),
        _entry(
            seq,
            event,
            CHARGE,
            event.amount,
            held=-event.amount,
            job_id=event.job_id,
            attempt=event.attempt,
            reference=event.event_id,
        ),
    )


def _earned(
    view: WalletView, seq: int, event: ev.ProviderCredited | ev.FeeCollected, kind: str
) -> Changes:
    wallet = _wallet(view, event.wallet_id, seq)
    wallet.available_udgpu += event.amount
    wallet.earned_udgpu += event.amount
    return (
        Changed(WALLETS.name, event.wallet_id),
        _entry(
            seq,
            event,
            kind,
            event.amount,
            available=event.amount,
            job_id=event.job_id,
            attempt=event.attempt,
            reference=event.charge_id,
        ),
    )


def _released(view: WalletView, seq: int, event: ev.HoldReleased) -> Changes:
    wallet = _wallet(view, event.wallet_id, seq)
    wallet.held_udgpu -= event.amount
    wallet.available_udgpu += event.amount
    key = (event.wallet_id, event.job_id, event.attempt)
    changes: list[Change] = [
        Changed(WALLETS.name, event.wallet_id),
        _hold(view, key, -event.amount),
    ]
    _clear_warning(view, key, changes)
    changes.append(
        _entry(
            seq,
            event,
            RELEASE,
            event.amount,
            available=event.amount,
            held=-event.amount,
            job_id=event.job_id,
            attempt=event.attempt,
            reference=event.reason,
        )
    )
    return changes


def _refunded(view: WalletView, seq: int, event: ev.ChargeRefunded) -> Changes:
    wallet = _wallet(view, event.wallet_id, seq)
    wallet.available_udgpu += event.amount
    wallet.charged_udgpu -= event.amount
    _spend(wallet, event, -event.amount)
    return (
        Changed(WALLETS.name, event.wallet_id),
        _entry(
            seq,
            event,
            REFUND,
            event.amount,
            available=event.amount,
            job_id=event.job_id,
            attempt=event.attempt,
            reference=event.reason,
        ),
    )


def _reversed(view: WalletView, seq: int, event: ev.CreditReversed) -> Changes:
    wallet = _wallet(view, event.wallet_id, seq)
    wallet.available_udgpu -= event.amount
    wallet.earned_udgpu -= event.amount
    return (
        Changed(WALLETS.name, event.wallet_id),
        _entry(
            seq,
            event,
            REVERSAL,
            event.amount,
            available=-event.amount,
            job_id=event.job_id,
            attempt=event.attempt,
            reference=event.refund_id,
        ),
    )


def _warned(view: WalletView, seq: int, event: ev.LowFundsWarned) -> Changes:
    wallet = _wallet(view, event.wallet_id, seq)
    wallet.warnings_total += 1
    key = (event.wallet_id, event.job_id, event.attempt)
    view.warnings[key] = WarningRow(
        wallet_id=event.wallet_id,
        job_id=event.job_id,
        attempt=event.attempt,
        seq=seq,
        needed_udgpu=event.needed,
        available_udgpu=event.available,
        stop_at_ms=to_ms(event.stop_at),
        at_ms=to_ms(event.at),
        budget=event.budget,
    )
    return (Changed(WALLETS.name, event.wallet_id), Changed(WARNINGS.name, key))


#: Events that change no wallet.
IGNORED: Final[frozenset[type[ev.Event]]] = frozenset(
    {
        ev.SettingsChanged,
        ev.PayoutSigned,
        ev.PaymentCredited,
        ev.UsageRecorded,
        ev.GpusReserved,
        ev.GpusReleased,
        ev.ProviderRegistered,
        ev.OfferUpdated,
        ev.ProviderWentOffline,
        ev.ProviderCameOnline,
        ev.ProviderDeregistered,
        ev.JobSubmitted,
        ev.JobQueued,
        ev.JobAssigned,
        ev.JobAccepted,
        ev.JobDeclined,
        ev.JobStarted,
        ev.JobCompleted,
        ev.JobFailed,
        ev.JobCancelRequested,
        ev.JobCancelled,
        ev.JobStopped,
        ev.JobResultsStored,
        ev.JobRequeued,
        # No money moves: the provider's credits of the attempt became final.
        ev.EarningsSettled,
    }
)


def evolve(view: WalletView, seq: int, event: ev.Event) -> Changes:
    """Apply one event to the wallets; return the rows it changed and the ledger entries."""
    if type(event) in IGNORED:
        return NOTHING
    match event:
        case ev.FundsCharged():
            return _charged(view, seq, event)
        case ev.ProviderCredited():
            return _earned(view, seq, event, CREDIT)
        case ev.FeeCollected():
            return _earned(view, seq, event, FEE)
        case ev.FundsHeld():
            return _held(view, seq, event)
        case ev.HoldReleased():
            return _released(view, seq, event)
        case ev.FundsDeposited():
            wallet = _wallet(view, event.wallet_id, seq)
            wallet.available_udgpu += event.amount
            wallet.deposited_udgpu += event.amount
            return (
                Changed(WALLETS.name, event.wallet_id),
                _entry(
                    seq,
                    event,
                    DEPOSIT,
                    event.amount,
                    available=event.amount,
                    reference=event.reference,
                    signature=event.signature,
                ),
            )
        case ev.LowFundsWarned():
            return _warned(view, seq, event)
        case ev.LowFundsCleared():
            _wallet(view, event.wallet_id, seq)
            changes: list[Change] = [Changed(WALLETS.name, event.wallet_id)]
            _clear_warning(view, (event.wallet_id, event.job_id, event.attempt), changes)
            return changes
        case ev.ChargeRefunded():
            return _refunded(view, seq, event)
        case ev.CreditReversed():
            return _reversed(view, seq, event)
        case ev.BudgetSet():
            wallet = _wallet(view, event.wallet_id, seq)
            wallet.budget_daily_udgpu = event.daily
            wallet.budget_monthly_udgpu = event.monthly
            return (Changed(WALLETS.name, event.wallet_id),)
        case ev.WithdrawalRequested():
            wallet = _wallet(view, event.wallet_id, seq)
            wallet.available_udgpu -= event.amount
            wallet.pending_withdrawal_udgpu += event.amount
            return (
                Changed(WALLETS.name, event.wallet_id),
                _entry(
                    seq,
                    event,
                    WITHDRAWAL_REQUESTED,
                    event.amount,
                    available=-event.amount,
                    reference=event.withdrawal_id,
                ),
            )
        case ev.FundsWithdrawn():
            wallet = _wallet(view, event.wallet_id, seq)
            wallet.pending_withdrawal_udgpu -= event.amount
            wallet.withdrawn_udgpu += event.amount
            return (
                Changed(WALLETS.name, event.wallet_id),
                _entry(
                    seq,
                    event,
                    WITHDRAWAL,
                    event.amount,
                    reference=event.withdrawal_id,
                    signature=event.signature,
                ),
            )
        case ev.WithdrawalFailed():
            wallet = _wallet(view, event.wallet_id, seq)
            wallet.pending_withdrawal_udgpu -= event.amount
            wallet.available_udgpu += event.amount
            return (
                Changed(WALLETS.name, event.wallet_id),
                _entry(
                    seq,
                    event,
                    WITHDRAWAL_FAILED,
                    event.amount,
                    available=event.amount,
                    reference=f"{event.withdrawal_id}: {event.reason}",
                ),
            )
        case ev.AccountOpened():
            _wallet(view, event.wallet_id, seq).role = event.role
            return (Changed(WALLETS.name, event.wallet_id),)
    raise UnknownEvent("wallets", type(event).__name__)


WALLETS_PROJECTION: Final = Projection(
    name="wallets",
    prefix="wallet",
    schema_version=3,
    tables=(WALLETS, HOLDS, WARNINGS, LEDGER),
    empty=WalletView,
    evolve=evolve,
)
