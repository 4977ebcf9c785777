"""Paying withdrawals exactly once: what to do next with a payout, given what the chain
shows, and the events that record it. Pure: the settlement handler does the IO.

A payout moves through: requested -> signed (the signature, the transaction and its last
valid block height are in the log *before* it is sent) -> paid (confirmed on chain), or
failed (its funds come back). The rule that makes it exactly once: a new transaction is
signed only when the recorded one can never land, that is when the chain's block height is
past its last valid block height *and* its signature is not on chain, read in that order
(a transaction seen missing at a height past its validity cannot appear later).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from dante.domain.decision import Decision
from dante.domain.model import World
from dante.domain.model.wallet import PayoutState
from dante.events.records import Append
from dante.schemas import events as ev
from dante.schemas.chain import SignatureStatus, SignedPayout

Action = Literal["sign", "send", "paid", "wait", "fail"]


@dataclass(frozen=True, slots=True)
class Seen:
    """What the chain showed for a payout's recorded transaction (None: not asked)."""

    #: The block height, read before the status.
    height: int
    status: SignatureStatus | None


@dataclass(frozen=True, slots=True)
class Step:
    action: Action
    reason: str = ""


def next_step(
    payout: PayoutState,
    seen: Seen | None,
    *,
    now: datetime,
    deadline_s: int,
    unreachable: str | None = None,
) -> Step:
    """What to do with `payout`. `seen` is what the chain showed of its recorded
    transaction (None when none is recorded, or when the chain could not be read:
    `unreachable` then says why)."""
    late = now >= payout.requested_at + timedelta(seconds=deadline_s)
    cannot_reach = Step("fail", f"the chain could not be reached: {unreachable}")
    if payout.signature is None:
        # Nothing was ever signed, so nothing can land: past the deadline the funds go back.
        if unreachable is None:
            return Step("sign")
        return cannot_reach if late else Step("wait")
    if seen is None:
        return Step("wait")  # the chain could not be read: the transaction may still land
    return _signed_step(payout, seen, late=late)


def _signed_step(payout: PayoutState, seen: Seen, *, late: bool) -> Step:
    status = seen.status
    if status is not None:
        if status.error is not None:
            # It landed and failed: it moved nothing, and its signature is spent.
            failed = Step("fail", f"the payout failed on chain: {status.error}")
            return failed if late else Step("sign")
        return Step("paid") if status.confirmed else Step("wait")
    if seen.height > payout.last_valid_block_height:
        return Step("sign")  # expired and not on chain: it can never land
    return Step("send")  # not on chain yet, still valid: the chain may have dropped it


def _event_id(withdrawal_id: str, what: str) -> str:
    return f"settlement:{withdrawal_id}:{what}"


def _locate(world: World, withdrawal_id: str) -> tuple[str, int, PayoutState] | None:
    wallet_id = world.open_payouts.get(withdrawal_id)
    if wallet_id is None:
        return None
    wallet = world.wallet(wallet_id)
    payout = wallet.payouts.get(withdrawal_id)
    return None if payout is None else (wallet_id, wallet.version, payout)


def record_signed(
    world: World, withdrawal_id: str, signed: SignedPayout, transaction: str, now: datetime
) -> Decision:
    """Record a freshly signed payout (before it is sent); nothing when it is no longer open
    or already carries a newer attempt."""
    found = _locate(world, withdrawal_id)
    if found is None:
        return Decision.nothing()
    wallet_id, version, payout = found
    attempt = payout.attempt + 1
    event = ev.PayoutSigned(
        event_id=_event_id(withdrawal_id, f"signed:{attempt}"),
        at=now,
        cause=f"settlement:{withdrawal_id}",
        wallet_id=wallet_id,
        withdrawal_id=withdrawal_id,
        signature=signed.signature,
        transaction=transaction,
        last_valid_block_height=signed.last_valid_block_height,
        attempt=attempt,
    )
    return Decision(appends=[Append(event=event, expected=version)])


def record_paid(world: World, withdrawal_id: str, signature: str, now: datetime) -> Decision:
    found = _locate(world, withdrawal_id)
    if found is None:
        return Decision.nothing()
    wallet_id, version, payout = found
    if payout.signature != signature:
        return Decision.nothing()
    event = ev.FundsWithdrawn(
        event_id=_event_id(withdrawal_id, "paid"),
        at=now,
        cause=f"settlement:{withdrawal_id}",
        wallet_id=wallet_id,
        withdrawal_id=withdrawal_id,
        amount=payout.amount,
        payout_address=payout.address,
        signature=signature,
    )
    return Decision(appends=[Append(event=event, expected=version)])


def record_failed(
    world: World, withdrawal_id: str, reason: str, now: datetime, *, signature: str | None
) -> Decision:
    """Give the funds back; nothing when the payout moved on (another transaction was signed
    since this was decided)."""
    found = _locate(world, withdrawal_id)
    if found is None:
        return Decision.nothing()
    wallet_id, version, payout = found
    if payout.signature != signature:
        return Decision.nothing()
    event = ev.WithdrawalFailed(
        event_id=_event_id(withdrawal_id, "failed"),
        at=now,
        cause=f"settlement:{withdrawal_id}",
        wallet_id=wallet_id,
        withdrawal_id=withdrawal_id,
        amount=payout.amount,
        reason=reason[:500],
    )
    return Decision(appends=[Append(event=event, expected=version)])
