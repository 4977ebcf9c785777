"""Deposits, withdrawals and budgets."""

from __future__ import annotations

from datetime import datetime

from dante.domain.deciders.context import Context
from dante.domain.decision import Decision
from dante.domain.model import World
from dante.domain.model.wallet import WalletState
from dante.domain.payments import check_deposit
from dante.domain.rejection import Rejected
from dante.events.records import Append
from dante.schemas import commands as cmd
from dante.schemas import events as ev
from dante.schemas.money import MAX_UDGPU, format_dgpu
from dante.schemas.results import BudgetResult, WalletResult


def wallet_result(wallet: WalletState, withdrawal_id: str | None = None) -> WalletResult:
    return WalletResult(
        wallet_id=wallet.wallet_id,
        available_udgpu=wallet.available,
        held_udgpu=wallet.held,
        total_udgpu=wallet.available + wallet.held,
        pending_withdrawal_udgpu=wallet.pending,
        withdrawal_id=withdrawal_id,
    )


def deposit(world: World, ctx: Context, command: cmd.Deposit) -> Decision:
    """Credit a transfer the service verified on chain: once per signature, ever."""
    transfer = check_deposit(ctx.payment, ctx.identity, command.amount)

    def answer(w: World) -> WalletResult:
        return wallet_result(w.wallet(ctx.identity))

    credited = world.payment(transfer.signature)
    if credited.version:
        if credited.cause == ctx.cause:  # this very command, retried: answer it again
            return Decision.nothing(result=answer)
        raise Rejected(
            "invalid",
            f"the transfer {transfer.signature} was already credited; a payment is credited once",
            "signature",
        )
    wallet = world.wallet(ctx.identity)
    if wallet.available + wallet.held + command.amount > MAX_UDGPU:
        raise Rejected(
            "invalid", "this deposit would exceed the largest balance a wallet may hold", "amount"
        )
    deposited = ev.FundsDeposited(
        **ctx.envelope(),
        wallet_id=ctx.identity,
        amount=command.amount,
        reference=command.reference,
        signature=transfer.signature,
    )
    payment = ev.PaymentCredited(
        **ctx.envelope(1),
        signature=transfer.signature,
        wallet_id=ctx.identity,
        amount=transfer.amount,
        source_owner=transfer.source_owner,
        slot=transfer.slot,
    )
    return Decision(
        appends=[
            Append(event=deposited, expected=wallet.version),
            Append(event=payment, expected=0),
        ],
        result=answer,
    )


def _payout_address(world: World, owner: str) -> str | None:
    """The payout address of the owner's most recently registered provider."""
    owned = [p for p in world.providers.values() if p.owner == owner and p.payout_address]
    if not owned:
        return None
    return max(owned, key=lambda p: p.version).payout_address


def withdraw(world: World, ctx: Context, command: cmd.Withdraw) -> Decision:
    minimum = ctx.settings.min_withdrawal
    if command.amount < minimum:
        raise Rejected(
            "invalid",
            f"the smallest withdrawal is {format_dgpu(minimum)} dGPU; "
            f"{format_dgpu(command.amount)} was asked",
            "amount",
        )
    wallet = world.wallet(ctx.identity)
    # Earnings of attempts that may still be lost to the provider (and so refunded to the
    # renter) stay in the wallet until the attempt ends.
    reversible = sum(wallet.reversible.values())
    if wallet.available - reversible < command.amount:
        pending = (
            f"; {format_dgpu(reversible)} dGPU earned by jobs still running can be withdrawn "
            "once they end"
            if reversible
            else ""
        )
        raise Rejected(
            "insufficient_funds",
            f"only {format_dgpu(max(0, wallet.available - reversible))} dGPU is available to "
            f"withdraw ({format_dgpu(wallet.held)} dGPU is held{pending}); "
            f"{format_dgpu(command.amount)} was asked",
            "amount",
        )
    address = command.payout_address or _payout_address(world, ctx.identity)
    if address is None:
        raise Rejected(
            "invalid",
            "no payout address: register a provider with one, or pass a payout address",
            "payout_address",
        )
    withdrawal_id = ctx.derived_id("wd")
    event = ev.WithdrawalRequested(
        **ctx.envelope(),
        wallet_id=ctx.identity,
        withdrawal_id=withdrawal_id,
        amount=command.amount,
        payout_address=address,
    )
    return Decision.on(
        wallet.version,
        event,
        result=lambda w: wallet_result(w.wallet(ctx.identity), withdrawal_id),
    )


def budget_result(wallet: WalletState, now: datetime) -> BudgetResult:
    today, month = wallet.spent(now)
    return BudgetResult(
        wallet_id=wallet.wallet_id,
        daily_udgpu=wallet.budget_daily,
        monthly_udgpu=wallet.budget_monthly,
        spent_today_udgpu=today,
        spent_this_month_udgpu=month,
        held_udgpu=wallet.held,
        spendable_udgpu=wallet.spendable(now)[0],
    )


def set_budget(world: World, ctx: Context, command: cmd.SetBudget) -> Decision:
    wallet = world.wallet(ctx.identity)
    if command.clear and (command.daily is not None or command.monthly is not None):
        raise Rejected("invalid", "clear removes both caps; give no amounts with it", "clear")
    if not command.clear and command.daily is None and command.monthly is None:
        raise Rejected("invalid", "give a daily cap, a monthly cap, or clear", "daily")
    daily = None if command.clear else command.daily
    monthly = None if command.clear else command.monthly
    if not command.clear:
        daily = wallet.budget_daily if daily is None else daily
        monthly = wallet.budget_monthly if monthly is None else monthly
    if daily is not None and monthly is not None and daily > monthly:
        raise Rejected(
            "invalid",
            f"the daily cap ({format_dgpu(daily)} dGPU) is above the monthly cap "
            f"({format_dgpu(monthly)} dGPU)",
            "daily",
        )
    now = ctx.now

    def result(w: World) -> BudgetResult:
        return budget_result(w.wallet(ctx.identity), now)

    if (daily, monthly) == (wallet.budget_daily, wallet.budget_monthly):
        return Decision.nothing(result)
    event = ev.BudgetSet(**ctx.envelope(), wallet_id=ctx.identity, daily=daily, monthly=monthly)
    return Decision.on(wallet.version, event, result=result)
