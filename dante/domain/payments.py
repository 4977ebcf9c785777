"""Does a chain transfer pay for a deposit? Pure rules over the values the service read."""

from __future__ import annotations

from dante.domain.deciders.context import VerifiedPayment
from dante.domain.rejection import Rejected
from dante.schemas.chain import TokenTransfer, deposit_memo, memo_account
from dante.schemas.money import format_dgpu


def check_deposit(payment: VerifiedPayment | None, account: str, amount: int) -> TokenTransfer:
    """The transfer that pays for the deposit; `Rejected` unless the payment is a confirmed
    dGPU transfer of exactly `amount` to the treasury's token account whose memo names
    `account`."""
    if payment is None:
        raise Rejected(
            "invalid",
            "a deposit must name the signature of its transfer to the platform's treasury",
            "signature",
        )
    transfer = payment.transfer
    if transfer is None:
        raise Rejected(
            "invalid",
            f"no confirmed token transfer has the signature {payment.signature} on the "
            f"{payment.cluster} chain",
            "signature",
        )
    if transfer.mint != payment.mint:
        raise Rejected(
            "invalid",
            f"that transfer moved another token ({transfer.mint}), not dGPU ({payment.mint})",
            "signature",
        )
    if transfer.destination != payment.treasury_account:
        raise Rejected(
            "invalid",
            f"that transfer paid {transfer.destination}, not the platform's treasury "
            f"({payment.treasury_account})",
            "signature",
        )
    expected = deposit_memo(account)
    if memo_account(transfer.memo) != account:
        raise Rejected(
            "invalid",
            f"that transfer's memo is {transfer.memo!r}, not {expected!r}: it does not name "
            "this account",
            "signature",
        )
    if transfer.amount != amount:
        raise Rejected(
            "invalid",
            f"that transfer moved {format_dgpu(transfer.amount)} dGPU, not the "
            f"{format_dgpu(amount)} dGPU of this deposit",
            "amount",
        )
    return transfer
