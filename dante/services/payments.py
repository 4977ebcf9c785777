"""The chain lookups a deposit needs, done before its decider (which does no IO).

A deposit names a transaction signature and may carry the signed transaction itself; the
service sends that to the chain first and waits for it to be confirmed. Either way it then
reads the confirmed transfer back from the chain: what is credited is what the chain says,
never what the command says.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from typing import TYPE_CHECKING

import structlog

from dante.chain import ChainError
from dante.domain.deciders.context import VerifiedPayment
from dante.domain.rejection import Rejected

if TYPE_CHECKING:
    from dante.chain import Chain
    from dante.schemas.commands import Deposit

log = structlog.get_logger(__name__)

#: How long a sent deposit may take to be confirmed before the renter is told to retry
#: with its signature (the command's own deadline is longer).
CONFIRM_TIMEOUT_S = 10.0


async def verify_deposit(chain: Chain | None, command: Deposit) -> VerifiedPayment:
    if chain is None:
        raise Rejected("unavailable", "this platform has no chain to verify deposits against")
    signature = command.signature
    if command.transaction:
        try:
            raw = base64.b64decode(command.transaction, validate=True)
        except (binascii.Error, ValueError):
            raise Rejected("malformed", "transaction is not base64", "transaction") from None
        try:
            sent = await chain.send(raw)
        except ChainError as exc:
            if exc.unreachable:
                raise Rejected("unavailable", f"the chain cannot be reached: {exc}") from None
            raise Rejected(
                "invalid", f"the chain refused the transfer: {exc}", "transaction"
            ) from None
        if signature is not None and sent != signature:
            raise Rejected(
                "invalid", "the transaction's signature is not the one named", "signature"
            )
        signature = sent
        await _confirmed(chain, signature)
    if signature is None:
        raise Rejected(
            "invalid",
            "a deposit must name the signature of its transfer to the platform's treasury",
            "signature",
        )
    try:
        transfer = await chain.transfer(signature)
    except ChainError as exc:
        raise Rejected("unavailable", f"the chain cannot be read: {exc}") from None
    return VerifiedPayment(
        signature=signature,
        transfer=transfer,
        mint=chain.mint,
        treasury_account=chain.treasury_account,
        cluster=chain.cluster,
    )


async def _confirmed(chain: Chain, signature: str) -> None:
    deadline = time.monotonic() + CONFIRM_TIMEOUT_S
    delay = 0.05
    while True:
        try:
            status = await chain.signature_status(signature)
        except ChainError as exc:
            raise Rejected("unavailable", f"the chain cannot be read: {exc}") from None
        if status is not None and status.error:
            raise Rejected(
                "invalid", f"the transfer failed on chain: {status.error}", "transaction"
            )
        if status is not None and status.confirmed:
            return
        if time.monotonic() > deadline:
            raise Rejected(
                "unavailable",
                f"the transfer {signature} is not confirmed yet; deposit again with "
                f"--signature {signature} in a moment",
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)
