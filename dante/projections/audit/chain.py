"""`dante audit --chain`: the log's money against the chain's.

The treasury's balance on chain must equal the deposits credited in the log minus the
payouts settled (and minus payouts recorded and already on chain, which the settlement is
about to record as paid); every credited deposit must be a transfer of its amount to the
treasury, every settled payout a transfer of its amount from the treasury to its payout
address. Pure: the caller reads the log's events and asks the chain (`AuditChain`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from dante.projections.audit.report import Check, Violation
from dante.schemas import events as ev
from dante.schemas.chain import ChainAudit, TokenTransfer
from dante.schemas.money import format_dgpu

CHAIN_CHECKS: Final[dict[str, Check]] = {
    check.code: check
    for check in (
        Check(
            "chain_treasury",
            "money",
            "the treasury's balance on chain is the deposits credited minus the payouts made",
        ),
        Check(
            "chain_deposit",
            "money",
            "every credited deposit is a confirmed transfer of its amount to the treasury",
        ),
        Check(
            "chain_payout",
            "money",
            "every settled payout is a confirmed transfer of its amount from the treasury "
            "to its payout address",
        ),
        Check("chain_unpaid_deposit", "money", "every deposit names the transaction that paid it"),
    )
}


@dataclass(slots=True)
class ChainFacts:
    """What the log says moved on chain."""

    #: signature -> (amount, wallet, seq)
    credited: dict[str, tuple[int, str, int]] = field(default_factory=dict)
    #: signature -> (amount, payout address, seq)
    paid: dict[str, tuple[int, str, int]] = field(default_factory=dict)
    #: Recorded payouts of withdrawals still open: signature -> (amount, address, seq).
    in_flight: dict[str, tuple[int, str, int]] = field(default_factory=dict)
    unpaid: list[tuple[int, ev.FundsDeposited]] = field(default_factory=list)
    #: Payouts whose signature an earlier payout already named: (seq, signature).
    reused: list[tuple[int, str]] = field(default_factory=list)

    def signatures(self) -> list[str]:
        return sorted({*self.credited, *self.paid, *self.in_flight})


def gather(events: Iterable[tuple[int, ev.Event]]) -> ChainFacts:
    facts = ChainFacts()
    requested: dict[str, tuple[int, str]] = {}
    signed: dict[str, tuple[str, int]] = {}
    for seq, event in events:
        match event:
            case ev.FundsDeposited():
                if event.signature is None:
                    facts.unpaid.append((seq, event))
                else:
                    facts.credited[event.signature] = (event.amount, event.wallet_id, seq)
            case ev.WithdrawalRequested():
                requested[event.withdrawal_id] = (event.amount, event.payout_address)
            case ev.PayoutSigned():
                signed[event.withdrawal_id] = (event.signature, seq)
            case ev.FundsWithdrawn() if event.signature is not None:
                if event.signature in facts.paid:
                    facts.reused.append((seq, event.signature))
                facts.paid[event.signature] = (event.amount, event.payout_address, seq)
                signed.pop(event.withdrawal_id, None)
                requested.pop(event.withdrawal_id, None)
            case ev.WithdrawalFailed():
                signed.pop(event.withdrawal_id, None)
                requested.pop(event.withdrawal_id, None)
            case _:
                pass
    for withdrawal_id, (signature, seq) in signed.items():
        amount, address = requested.get(withdrawal_id, (0, ""))
        facts.in_flight[signature] = (amount, address, seq)
    return facts


def check(facts: ChainFacts, chain: ChainAudit) -> list[Violation]:
    found: dict[str, TokenTransfer] = {t.signature: t for t in chain.transfers}
    out: list[Violation] = []
    for seq, deposit in facts.unpaid:
        out.append(
            Violation(
                code="chain_unpaid_deposit",
                seqs=[seq],
                message=f"{format_dgpu(deposit.amount)} dGPU was deposited into "
                f"{deposit.wallet_id} without a transaction",
                wallet_id=deposit.wallet_id,
            )
        )
    for signature, (amount, wallet_id, seq) in facts.credited.items():
        transfer = found.get(signature)
        wrong = _deposit_wrong(transfer, amount, chain)
        if wrong:
            out.append(
                Violation(
                    code="chain_deposit",
                    seqs=[seq],
                    message=f"the deposit credited to {wallet_id} at seq {seq} "
                    f"({signature}): {wrong}",
                    wallet_id=wallet_id,
                )
            )
    for signature, (amount, address, seq) in facts.paid.items():
        wrong = _payout_wrong(found.get(signature), amount, address, chain)
        if wrong:
            out.append(
                Violation(
                    code="chain_payout",
                    seqs=[seq],
                    message=f"the payout at seq {seq} ({signature}): {wrong}",
                )
            )
    for seq, signature in facts.reused:
        out.append(
            Violation(
                code="chain_payout",
                seqs=[facts.paid[signature][2], seq],
                message=f"the payout at seq {seq} names {signature}, which paid another "
                "withdrawal: one transaction cannot pay two",
            )
        )
    landed = sum(
        amount
        for signature, (amount, address, _) in facts.in_flight.items()
        if not _payout_wrong(found.get(signature), amount, address, chain)
    )
    expected = (
        sum(a for a, _, _ in facts.credited.values())
        - sum(a for a, _, _ in facts.paid.values())
        - landed
    )
    if chain.treasury_balance_udgpu != expected:
        out.append(
            Violation(
                code="chain_treasury",
                seqs=[],
                message=f"the treasury {chain.treasury} holds "
                f"{format_dgpu(chain.treasury_balance_udgpu)} dGPU on the {chain.cluster} "
                f"chain, but the log's deposits minus payouts are {format_dgpu(expected)} dGPU "
                f"({chain.treasury_balance_udgpu - expected:+} µdGPU)",
            )
        )
    return out


def _deposit_wrong(transfer: TokenTransfer | None, amount: int, chain: ChainAudit) -> str:
    if transfer is None:
        return "the chain has no such transfer"
    if transfer.mint != chain.mint:
        return f"it moved another token ({transfer.mint})"
    if transfer.destination != chain.treasury_account:
        return f"it paid {transfer.destination}, not the treasury"
    if transfer.amount != amount:
        return f"it moved {format_dgpu(transfer.amount)} dGPU, not {format_dgpu(amount)}"
    return ""


def _payout_wrong(
    transfer: TokenTransfer | None, amount: int, address: str, chain: ChainAudit
) -> str:
    if transfer is None:
        return "the chain has no such transfer"
    if transfer.mint != chain.mint:
        return f"it moved another token ({transfer.mint})"
    if transfer.source_owner != chain.treasury:
        return f"it was paid by {transfer.source_owner}, not the treasury"
    if transfer.destination_owner != address:
        return f"it paid {transfer.destination_owner or transfer.destination}, not {address}"
    if transfer.amount != amount:
        return f"it moved {format_dgpu(transfer.amount)} dGPU, not {format_dgpu(amount)}"
    return ""
