"""The wallets fold: balances, holds, the ledger, warnings, and conservation of money."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import given, settings

from dante.projections.projector import Projector
from dante.projections.tables import Added
from dante.projections.wallets import (
    HOLDS,
    LEDGER,
    WALLETS,
    WALLETS_PROJECTION,
    LedgerRow,
    WalletView,
)
from dante.schemas import events as ev
from tests.factories import NOW, SOLANA, deposit, make
from tests.projections.helpers import fold, fold_changes
from tests.projections.histories import History, steps

DGPU = 1_000_000


def held(amount: int, job_id: str = "job-1", attempt: int = 1, **kw: Any) -> ev.FundsHeld:
    kw.setdefault("wallet_id", "alice")
    return make(ev.FundsHeld, job_id=job_id, attempt=attempt, amount=amount, **kw)


def charge(amount: int, fee: int, job_id: str = "job-1") -> list[ev.Event]:
    charged = make(
        ev.FundsCharged,
        wallet_id="alice",
        job_id=job_id,
        attempt=1,
        amount=amount,
        usage_seq=3,
        total_gpu_ms=60_000,
        price=500_000,
        fee_bps=500,
        provider_wallet="bob",
    )
    return [
        charged,
        make(
            ev.ProviderCredited,
            wallet_id="bob",
            job_id=job_id,
            attempt=1,
            amount=amount - fee,
            charge_id=charged.event_id,
        ),
        make(
            ev.FeeCollected,
            wallet_id="platform",
            job_id=job_id,
            attempt=1,
            amount=fee,
            charge_id=charged.event_id,
        ),
    ]


def released(amount: int, job_id: str = "job-1") -> ev.HoldReleased:
    return make(
        ev.HoldReleased, wallet_id="alice", job_id=job_id, attempt=1, amount=amount, reason="done"
    )


def ledger(events: list[ev.Event]) -> list[LedgerRow]:
    view = WALLETS_PROJECTION.empty()
    rows: list[LedgerRow] = []
    for seq, event in enumerate(events, start=1):
        changes = WALLETS_PROJECTION.evolve(view, seq, event)
        rows.extend(c.row for c in changes if isinstance(c, Added) and isinstance(c.row, LedgerRow))
    return rows


def test_a_job_s_money_moves_through_hold_charge_credit_fee_and_release() -> None:
    events = [deposit("alice", 10), held(4 * DGPU), *charge(1_000_000, 50_000), released(3 * DGPU)]
    view = fold(WALLETS_PROJECTION, events)
    alice, bob, platform = (view.wallets[w] for w in ("alice", "bob", "platform"))
    assert (alice.available_udgpu, alice.held_udgpu) == (9 * DGPU, 0)
    assert (alice.deposited_udgpu, alice.charged_udgpu) == (10 * DGPU, DGPU)
    assert (bob.available_udgpu, bob.earned_udgpu, bob.role) == (950_000, 950_000, "renter")
    assert (platform.available_udgpu, platform.earned_udgpu, platform.role) == (
        50_000,
        50_000,
        "platform",
    )
    assert view.holds == {}
    assert alice.updated_seq == 6


def test_every_money_move_has_a_ledger_entry_with_its_effects() -> None:
    events = [
        deposit("alice", 10, reference="card-1"),
        held(4 * DGPU),
        *charge(1_000_000, 50_000),
        released(3 * DGPU),
        make(
            ev.WithdrawalRequested,
            wallet_id="bob",
            withdrawal_id="wd-1",
            amount=500_000,
            payout_address=SOLANA,
        ),
        make(
            ev.FundsWithdrawn,
            wallet_id="bob",
            withdrawal_id="wd-1",
            amount=500_000,
            payout_address=SOLANA,
        ),
    ]
    rows = ledger(events)
    assert [
        (r.seq, r.wallet_id, r.kind, r.amount_udgpu, r.available_delta_udgpu, r.held_delta_udgpu)
        for r in rows
    ] == [
        (1, "alice", "deposit", 10 * DGPU, 10 * DGPU, 0),
        (2, "alice", "hold", 4 * DGPU, -4 * DGPU, 4 * DGPU),
        (3, "alice", "charge", DGPU, 0, -DGPU),
        (4, "bob", "credit", 950_000, 950_000, 0),
        (5, "platform", "fee", 50_000, 50_000, 0),
        (6, "alice", "release", 3 * DGPU, 3 * DGPU, -3 * DGPU),
        (7, "bob", "withdrawal_requested", 500_000, -500_000, 0),
        (8, "bob", "withdrawal", 500_000, 0, 0),
    ]
    assert rows[0].reference == "card-1"
    assert rows[3].reference == rows[4].reference == events[2].event_id == rows[2].reference
    assert (rows[1].job_id, rows[1].attempt) == ("job-1", 1)
    assert rows[6].reference == "wd-1"
    view = fold(WALLETS_PROJECTION, events)
    bob = view.wallets["bob"]
    assert (bob.available_udgpu, bob.pending_withdrawal_udgpu, bob.withdrawn_udgpu) == (
        450_000,
        0,
        500_000,
    )


def test_a_withdrawal_is_pending_until_paid_out() -> None:
    view = fold(
        WALLETS_PROJECTION,
        [
            deposit("bob", 2),
            make(
                ev.WithdrawalRequested,
                wallet_id="bob",
                withdrawal_id="wd-1",
                amount=DGPU,
                payout_address=SOLANA,
            ),
        ],
    )
    bob = view.wallets["bob"]
    assert (bob.available_udgpu, bob.pending_withdrawal_udgpu) == (DGPU, DGPU)


def test_holds_are_tracked_per_job_attempt() -> None:
    view, changes = fold_changes(
        WALLETS_PROJECTION,
        [deposit("alice", 10), held(DGPU), held(2 * DGPU, "job-2"), held(DGPU)],
    )
    assert {k: h.held_udgpu for k, h in view.holds.items()} == {
        ("alice", "job-1", 1): 2 * DGPU,
        ("alice", "job-2", 1): 2 * DGPU,
    }
    assert view.wallets["alice"].held_udgpu == 4 * DGPU
    assert {c.table for c in changes} == {WALLETS.name, HOLDS.name, LEDGER.name}


def test_roles_come_from_account_opened_else_default_to_renter() -> None:
    view = fold(
        WALLETS_PROJECTION,
        [
            deposit("alice", 1),
            make(ev.AccountOpened, wallet_id="bob", role="provider"),
            deposit("bob", 1),
        ],
    )
    assert {w: row.role for w, row in view.wallets.items()} == {
        "alice": "renter",
        "bob": "provider",
    }


def test_rule_breaking_events_are_applied_as_they_are() -> None:
    # A charge without a hold and a release of more than was held: shown, for an audit.
    view = fold(WALLETS_PROJECTION, [*charge(DGPU, 0), released(2 * DGPU, "job-2")])
    alice = view.wallets["alice"]
    assert (alice.available_udgpu, alice.held_udgpu) == (2 * DGPU, -3 * DGPU)
    assert {k: h.held_udgpu for k, h in view.holds.items()} == {
        ("alice", "job-1", 1): -DGPU,
        ("alice", "job-2", 1): -2 * DGPU,
    }


def test_a_low_funds_warning_stays_until_funds_are_held_or_released() -> None:
    warned = make(
        ev.LowFundsWarned,
        wallet_id="alice",
        job_id="job-1",
        attempt=1,
        needed=5 * DGPU,
        available=10,
        stop_at=NOW + timedelta(minutes=5),
    )
    view = fold(WALLETS_PROJECTION, [deposit("alice", 1), held(DGPU), warned])
    assert view.wallets["alice"].warnings_total == 1
    warning = view.warnings["alice", "job-1", 1]
    assert (warning.seq, warning.needed_udgpu, warning.available_udgpu) == (3, 5 * DGPU, 10)
    assert not ledger([warned])
    view = fold(WALLETS_PROJECTION, [deposit("alice", 9), held(DGPU), warned, held(DGPU)])
    assert view.warnings == {}
    view = fold(WALLETS_PROJECTION, [deposit("alice", 9), held(DGPU), warned, released(DGPU)])
    assert view.warnings == {}
    assert view.wallets["alice"].warnings_total == 1


def conserved(view: WalletView) -> tuple[int, int]:
    inside = sum(
        w.available_udgpu + w.held_udgpu + w.pending_withdrawal_udgpu for w in view.wallets.values()
    )
    outside = sum(w.deposited_udgpu - w.withdrawn_udgpu for w in view.wallets.values())
    return inside, outside


@settings(max_examples=60, deadline=None)
@given(steps)
def test_money_is_conserved_after_every_decision(drawn: list[tuple[str, int, int]]) -> None:
    history = History().play(drawn)
    projector = Projector([WALLETS_PROJECTION])
    view = projector.view("wallets")
    assert isinstance(view, WalletView)
    seq = 0
    for batch in history.batches:
        for event in batch:
            seq += 1
            projector.apply(seq, event)
        inside, outside = conserved(view)
        assert inside == outside
        # Open holds add up to what the wallets say is held.
        assert sum(h.held_udgpu for h in view.holds.values()) == sum(
            w.held_udgpu for w in view.wallets.values()
        )
        assert all(w.available_udgpu >= 0 for w in view.wallets.values())
