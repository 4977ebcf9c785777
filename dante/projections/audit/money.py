"""Money: conservation at every committed position, no negative balance or hold, withdrawals.

A refund (`ChargeRefunded`) moves money back into the renter's wallet and its
`CreditReversed` take it out of the provider's and the platform's, in one batch.

Inside the platform, money sits in three places: wallets' available balances, holds for job
attempts, and withdrawals requested but not yet paid. It enters by deposits and leaves by
completed withdrawals. So at every committed position of the log

    Σ available + Σ holds + Σ pending withdrawals = Σ deposits - Σ withdrawals paid.

Positions inside an atomic batch were never visible to anyone (a charge lands with its
credit and fee, or not at all), so the books are checked where a batch ends. Only charges,
credits, fees and paid withdrawals can unbalance them; the difference is kept as a running
sum, so each committed position costs nothing when nothing moved.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from dante.projections.audit.facts import Facts, Handler
from dante.projections.audit.report import Findings
from dante.schemas import events as ev
from dante.schemas.money import format_dgpu

HoldKey = tuple[str, str, int]  # (wallet, job, attempt)


@dataclass(slots=True)
class _Wallet:
    available: int = 0
    #: The available balance at the last committed position.
    committed: int = 0
    #: Withdrawals requested and not yet paid: id -> (amount, sequence of the request).
    pending: dict[str, tuple[int, int]] = field(default_factory=dict)


class MoneyChecks:
    def __init__(self, facts: Facts, findings: Findings) -> None:
        self._facts = facts
        self._findings = findings
        self._wallets: dict[str, _Wallet] = {}
        #: Open holds (never zero) and the sequence of each one's last change.
        self.holds: dict[HoldKey, int] = {}
        self.hold_seq: dict[HoldKey, int] = {}
        self.inside = 0
        self.outside = 0
        self._reported = 0
        #: Since the last committed position: events that moved the books' balance, wallets
        #: whose balance went down, holds that went down (with the events that did it).
        self._moved: list[int] = []
        self._lowered: dict[str, list[int]] = {}
        self._drawn: dict[HoldKey, list[int]] = {}

    def handlers(self) -> Mapping[type[ev.Event], Handler]:
        return {
            ev.FundsDeposited: self._deposited,
            ev.FundsHeld: self._held,
            ev.FundsCharged: self._charged,
            ev.ProviderCredited: self._paid_in,
            ev.FeeCollected: self._paid_in,
            ev.HoldReleased: self._released,
            ev.ChargeRefunded: self._refunded,
            ev.CreditReversed: self._reversed,
            ev.WithdrawalRequested: self._withdrawal_requested,
            ev.FundsWithdrawn: self._withdrawn,
            ev.WithdrawalFailed: self._withdrawal_failed,
        }

    def hold(self, wallet_id: str, job_id: str, attempt: int) -> int:
        return self.holds.get((wallet_id, job_id, attempt), 0)

    def _wallet(self, wallet_id: str) -> _Wallet:
        wallet = self._wallets.get(wallet_id)
        if wallet is None:
            wallet = self._wallets[wallet_id] = _Wallet()
        return wallet

    def _lower(self, seq: int, wallet_id: str, amount: int) -> None:
        self._wallet(wallet_id).available -= amount
        self._lowered.setdefault(wallet_id, []).append(seq)

    def _change_hold(self, seq: int, key: HoldKey, delta: int) -> None:
        amount = self.holds.get(key, 0) + delta
        if amount:
            self.holds[key] = amount
            self.hold_seq[key] = seq
        else:
            self.holds.pop(key, None)
            self.hold_seq.pop(key, None)
        if delta < 0:
            self._drawn.setdefault(key, []).append(seq)

    # ── events ──────────────────────────────────────────────────────────────────────────

    def _deposited(self, _seq: int, event: ev.FundsDeposited) -> None:
        self._wallet(event.wallet_id).available += event.amount
        self.inside += event.amount
        self.outside += event.amount

    def _held(self, seq: int, event: ev.FundsHeld) -> None:
        self._lower(seq, event.wallet_id, event.amount)
        self._change_hold(seq, (event.wallet_id, event.job_id, event.attempt), event.amount)

    def _charged(self, seq: int, event: ev.FundsCharged) -> None:
        self._change_hold(seq, (event.wallet_id, event.job_id, event.attempt), -event.amount)
        self.inside -= event.amount
        self._moved.append(seq)

    def _paid_in(self, seq: int, event: ev.ProviderCredited | ev.FeeCollected) -> None:
        self._wallet(event.wallet_id).available += event.amount
        self.inside += event.amount
        self._moved.append(seq)

    def _refunded(self, seq: int, event: ev.ChargeRefunded) -> None:
        self._wallet(event.wallet_id).available += event.amount
        self.inside += event.amount
        self._moved.append(seq)

    def _reversed(self, seq: int, event: ev.CreditReversed) -> None:
        self._lower(seq, event.wallet_id, event.amount)
        self.inside -= event.amount
        self._moved.append(seq)

    def _released(self, seq: int, event: ev.HoldReleased) -> None:
        self._change_hold(seq, (event.wallet_id, event.job_id, event.attempt), -event.amount)
        self._wallet(event.wallet_id).available += event.amount

    def _withdrawal_requested(self, seq: int, event: ev.WithdrawalRequested) -> None:
        wallet = self._wallet(event.wallet_id)
        self._lower(seq, event.wallet_id, event.amount)
        amount, _ = wallet.pending.get(event.withdrawal_id, (0, seq))
        wallet.pending[event.withdrawal_id] = (amount + event.amount, seq)

    def _withdrawn(self, seq: int, event: ev.FundsWithdrawn) -> None:
        wallet = self._wallet(event.wallet_id)
        requested, request_seq = wallet.pending.pop(event.withdrawal_id, (0, 0))
        self.inside -= requested
        self.outside -= event.amount
        if requested != event.amount or not request_seq:
            self._moved.append(seq)
            what = (
                f"{format_dgpu(requested)} dGPU was requested at seq {request_seq}"
                if request_seq
                else "it was never requested, or was paid before"
            )
            self._findings.add(
                "withdrawal",
                [request_seq, seq] if request_seq else [seq],
                f"withdrawal {event.withdrawal_id} paid {format_dgpu(event.amount)} dGPU at "
                f"seq {seq}, but {what}",
                wallet_id=event.wallet_id,
            )

    def _withdrawal_failed(self, seq: int, event: ev.WithdrawalFailed) -> None:
        wallet = self._wallet(event.wallet_id)
        requested, request_seq = wallet.pending.pop(event.withdrawal_id, (0, 0))
        wallet.available += requested
        if requested != event.amount or not request_seq:
            self._findings.add(
                "withdrawal",
                [request_seq, seq] if request_seq else [seq],
                f"withdrawal {event.withdrawal_id} gave back {format_dgpu(event.amount)} dGPU "
                f"at seq {seq}, but "
                + (
                    f"{format_dgpu(requested)} dGPU was requested at seq {request_seq}"
                    if request_seq
                    else "it was never requested, or was settled before"
                ),
                wallet_id=event.wallet_id,
            )

    # ── committed positions ─────────────────────────────────────────────────────────────

    def committed(self, seq: int) -> None:
        if self._moved:
            self._check_balance(seq)
        if self._lowered:
            self._check_wallets()
        if self._drawn:
            self._check_holds()

    def _check_balance(self, seq: int) -> None:
        off = self.inside - self.outside
        if off != self._reported:
            if off:
                self._findings.add(
                    "conservation",
                    self._moved,
                    f"after seq {seq} the wallets, holds and pending withdrawals hold "
                    f"{format_dgpu(self.inside)} dGPU, but deposits minus withdrawals are "
                    f"{format_dgpu(self.outside)} dGPU ({off:+} µdGPU)",
                )
            self._reported = off
        self._moved = []

    def _check_wallets(self) -> None:
        for wallet_id, seqs in self._lowered.items():
            wallet = self._wallets[wallet_id]
            if wallet.available < 0 and wallet.available < wallet.committed:
                self._findings.add(
                    "negative_balance",
                    seqs,
                    f"{wallet_id}'s available balance fell to {format_dgpu(wallet.available)} dGPU",
                    wallet_id=wallet_id,
                )
            wallet.committed = wallet.available
        self._lowered = {}

    def _check_holds(self) -> None:
        for key, seqs in self._drawn.items():
            amount = self.holds.get(key, 0)
            if amount < 0:
                wallet_id, job_id, attempt = key
                self._findings.add(
                    "negative_hold",
                    seqs,
                    f"the hold on {wallet_id}'s wallet for attempt {attempt} of {job_id} was "
                    f"drawn {format_dgpu(-amount)} dGPU beyond what it held",
                    job_id=job_id,
                    attempt=attempt,
                    wallet_id=wallet_id,
                )
        self._drawn = {}

    def finish(self) -> None:
        # A log that ends inside a batch (it cannot, but a reader may stop there): check it.
        self.committed(self._facts.seq)
