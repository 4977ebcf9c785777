"""The settlement: pays every withdrawal on chain, exactly once, across crashes.

A process manager like the others, but one that does IO with the chain; its decisions are
pure (`domain/settlement.py`) and carried out by the executor. For each open withdrawal,
on every step:

1. nothing signed yet: sign a transfer from the treasury to the payout address's token
   account (made if missing), **record** it (`PayoutSigned`: signature, transaction, last
   valid block height), and only once that landed in the log, send it;
2. a transaction recorded: read the block height, then its status. Confirmed: append
   `FundsWithdrawn` with the signature. Not on chain and still valid: send it again (a
   cluster may drop it). Not on chain and expired: it can never land, so sign a new one
   (step 1). The chain unreachable: wait;
3. a payout that cannot be made (an invalid address; the chain unreachable past the
   deadline while no transaction of it can land) fails: `WithdrawalFailed` gives the funds
   back with the reason.

A crash anywhere leaves the log saying what was signed; the next step looks it up before
anything is signed again. Only one settlement should run per chain (it lives with the
chain, in the process that serves the commands); two would still pay once, as every
record is appended with the wallet's expected version and a new transaction is signed only
after the recorded one expired.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

import structlog

from dante.chain import ChainError
from dante.domain import settlement as rules
from dante.domain.settings import Settings
from dante.handlers.executor import Executor, Log
from dante.schemas.chain import payout_memo

if TYPE_CHECKING:
    from dante.chain import Chain
    from dante.domain.model import World
    from dante.domain.model.wallet import PayoutState

log = structlog.get_logger(__name__)

#: Called at the named points of a step, for the tests to crash the settlement there.
Fault = Callable[[str], None]


def _no_fault(_: str) -> None:
    return None


class Settlement:
    """Pays the open withdrawals of `world` (kept current by whoever owns it)."""

    name = "settlement"

    def __init__(
        self,
        chain: Chain,
        log: Log,
        world: Callable[[], World],
        *,
        settings: Settings | None = None,
        clock: Callable[[], datetime],
        fault: Fault = _no_fault,
    ) -> None:
        self.chain = chain
        self._world = world
        self._settings = settings or Settings()
        self._clock = clock
        self._fault = fault
        self._executor = Executor(log, world, name=self.name)

    async def run(self, *, interval: float = 1.0) -> None:
        while True:
            try:
                await self.step()
            except Exception:
                log.exception("settlement.step_failed")
            await asyncio.sleep(interval)

    async def step(self) -> int:
        """One pass over every open withdrawal; how many are still open after it."""
        for withdrawal_id in sorted(self._world().open_payouts):
            await self.settle(withdrawal_id)
        return len(self._world().open_payouts)

    async def settle(self, withdrawal_id: str, *, again: bool = True) -> None:
        """Take the withdrawal one step on; when that sent its transaction, look at once
        whether it landed (a local chain confirms at once; a cluster within seconds)."""
        payout = self._payout(withdrawal_id)
        if payout is None:
            return
        seen, unreachable = await self._look(payout)
        now = self._clock()
        step = rules.next_step(
            payout,
            seen,
            now=now,
            deadline_s=self._settings.payout_deadline_s,
            unreachable=unreachable,
        )
        if not again and step.action != "paid":
            return  # the look right after a send: it landed, or the next step will see
        match step.action:
            case "paid":
                await self._paid(withdrawal_id, payout.signature or "", now)
            case "send" | "sign":
                if step.action == "send":
                    sent = await self._send(withdrawal_id, base64.b64decode(payout.transaction))
                else:
                    sent = await self._sign_and_send(
                        withdrawal_id, payout.address, payout.amount, payout.signature
                    )
                if sent and again:
                    await self.settle(withdrawal_id, again=False)
            case "fail":
                await self._fail(withdrawal_id, step.reason, payout.signature)
            case "wait":
                pass

    def _payout(self, withdrawal_id: str) -> PayoutState | None:
        world = self._world()
        wallet_id = world.open_payouts.get(withdrawal_id)
        return None if wallet_id is None else world.wallet(wallet_id).payouts.get(withdrawal_id)

    async def _look(self, payout: PayoutState) -> tuple[rules.Seen | None, str | None]:
        """What the chain shows of the recorded transaction (the height first, then its
        status), or why it could not be read."""
        if payout.signature is None:
            return None, None
        try:
            height = await self.chain.block_height()
            status = await self.chain.signature_status(payout.signature)
        except ChainError as exc:
            return None, str(exc)
        return rules.Seen(height=height, status=status), None

    async def _paid(self, withdrawal_id: str, signature: str, now: datetime) -> None:
        await self._executor.run(
            lambda: [rules.record_paid(self._world(), withdrawal_id, signature, now)]
        )
        self._fault("paid")
        log.info("settlement.paid", withdrawal=withdrawal_id, signature=signature)

    async def _sign_and_send(
        self, withdrawal_id: str, address: str, amount: int, previous: str | None
    ) -> bool:
        try:
            signed = await self.chain.sign_payout(address, amount, memo=payout_memo(withdrawal_id))
        except ValueError as exc:
            await self._fail(withdrawal_id, f"invalid payout address: {exc}", previous)
            return False
        except ChainError as exc:
            log.warning("settlement.unreachable", withdrawal=withdrawal_id, error=str(exc))
            if previous is None:
                # Nothing can land: past the deadline the funds go back.
                payout = self._payout(withdrawal_id)
                if payout is not None:
                    step = rules.next_step(
                        payout,
                        None,
                        now=self._clock(),
                        deadline_s=self._settings.payout_deadline_s,
                        unreachable=str(exc),
                    )
                    if step.action == "fail":
                        await self._fail(withdrawal_id, step.reason, None)
            return False
        self._fault("signed")
        transaction = base64.b64encode(signed.transaction).decode()
        now = self._clock()
        landed = await self._executor.run(
            lambda: [rules.record_signed(self._world(), withdrawal_id, signed, transaction, now)]
        )
        if not any(item.seqs for item in landed):
            return False  # it moved on meanwhile: this transaction is never sent
        self._fault("recorded")
        log.info(
            "settlement.signed",
            withdrawal=withdrawal_id,
            signature=signed.signature,
            last_valid_block_height=signed.last_valid_block_height,
        )
        return await self._send(withdrawal_id, signed.transaction)

    async def _send(self, withdrawal_id: str, transaction: bytes) -> bool:
        try:
            await self.chain.send(transaction)
        except ChainError as exc:
            # Refused or unreachable: it is looked up again on the next step, and signed
            # anew only once it expired without landing.
            log.warning("settlement.send_failed", withdrawal=withdrawal_id, error=str(exc))
            return False
        self._fault("sent")
        return True

    async def _fail(self, withdrawal_id: str, reason: str, signature: str | None) -> None:
        now = self._clock()
        await self._executor.run(
            lambda: [
                rules.record_failed(self._world(), withdrawal_id, reason, now, signature=signature)
            ]
        )
        log.warning("settlement.failed", withdrawal=withdrawal_id, reason=reason)
