"""A chain transaction the platform credited: one per signature, ever."""

from __future__ import annotations

import msgspec

from dante.schemas import events as ev


class PaymentState(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    signature: str
    version: int = 0
    wallet_id: str | None = None
    amount: int = 0
    #: The command that credited it, so its retry is answered, not refused.
    cause: str = ""


def evolve_payment(state: PaymentState, event: ev.Event, seq: int) -> PaymentState:
    match event:
        case ev.PaymentCredited():
            return PaymentState(
                signature=state.signature,
                version=seq,
                wallet_id=event.wallet_id,
                amount=event.amount,
                cause=event.cause,
            )
        case _:
            raise TypeError(f"{type(event).__name__} is not a payment event")
