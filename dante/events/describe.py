"""One line, in words, of what an event did: for statements and for browsing the log."""

from __future__ import annotations

from dante.schemas import events as ev
from dante.schemas.money import format_dgpu


def gpu_seconds(ms: int) -> str:
    """Milliseconds of GPU time as exact GPU-seconds: 12500 -> "12.5 GPU-s"."""
    whole, frac = divmod(ms, 1000)
    return f"{whole}.{frac:03d}".rstrip("0").rstrip(".") + " GPU-s"


def _dgpu(amount: int) -> str:
    return f"{format_dgpu(amount)} dGPU"


def _provider(event: ev.ProviderEvent) -> str:
    match event:
        case ev.ProviderRegistered():
            return f"registered by {event.owner}: {len(event.gpus)} GPU(s), {event.name}"
        case ev.OfferUpdated():
            prices = ", ".join(
                f"GPU {o.index} {format_dgpu(o.price)}/h{'' if o.available else ' (withdrawn)'}"
                for o in event.offers
            )
            return f"offers: {prices}"
        case ev.ProviderWentOffline():
            return f"offline: {event.reason}" if event.reason else "offline"
        case ev.ProviderDeregistered():
            return f"left the platform: {event.reason}" if event.reason else "left the platform"
        case ev.GpusReserved():
            return f"GPUs {event.gpu_indices} reserved for {event.job_id} #{event.attempt}"
        case ev.GpusReleased():
            return f"GPUs {event.gpu_indices} released by {event.job_id} #{event.attempt}"
        case _:
            return "online"


def _job(event: ev.JobEvent) -> str:
    match event:
        case ev.JobSubmitted():
            req = event.requirements
            cap = "" if req.max_price is None else f", at most {format_dgpu(req.max_price)}/h"
            return f"submitted by {event.renter}: {req.gpu_count} GPU(s){cap}"
        case ev.JobQueued():
            return f"queued ({event.code}) {event.reason}".rstrip()
        case ev.JobAssigned():
            return (
                f"attempt {event.attempt} assigned to {event.provider_id} "
                f"({event.provider_owner}), GPUs {event.gpu_indices}, at "
                f"{format_dgpu(event.price)} dGPU/GPU-h, fee {event.fee_bps / 100:g}%"
            )
        case ev.UsageRecorded():
            simulated = any(s.simulated for tick in event.ticks for s in tick.samples)
            marked = " (simulated GPUs: telemetry not measured)" if simulated else ""
            return f"{len(event.ticks)} usage tick(s), {gpu_seconds(event.gpu_ms)}{marked}"
        case ev.JobDeclined() | ev.JobRequeued() | ev.JobFailed() | ev.JobCancelled():
            verb = type(event).__name__.removeprefix("Job").lower()
            return f"{verb}: {event.reason}" if event.reason else verb
        case ev.JobCancelRequested():
            return f"cancel requested by {event.by}"
        case ev.JobStopped():
            return f"stopped ({event.code}) {event.reason}".rstrip()
        case ev.JobCompleted():
            return f"completed (exit code {event.exit_code})"
        case ev.JobResultsStored():
            return f"results stored ({event.results.size} bytes)"
        case _:
            return type(event).__name__.removeprefix("Job").lower()


def _refunds_and_budgets(
    event: ev.LowFundsCleared
    | ev.ChargeRefunded
    | ev.CreditReversed
    | ev.EarningsSettled
    | ev.BudgetSet,
) -> str:
    match event:
        case ev.EarningsSettled():
            return f"earnings of {event.job_id} #{event.attempt} settled"
        case ev.LowFundsCleared():
            return f"low-funds warning for {event.job_id} #{event.attempt} cleared: {event.reason}"
        case ev.ChargeRefunded():
            return f"refunded {_dgpu(event.amount)} for {event.job_id} #{event.attempt}"
        case ev.CreditReversed():
            return f"credit of {_dgpu(event.amount)} for {event.job_id} #{event.attempt} reversed"
        case ev.BudgetSet():
            daily = "none" if event.daily is None else _dgpu(event.daily)
            monthly = "none" if event.monthly is None else _dgpu(event.monthly)
            return f"budget set: daily {daily}, monthly {monthly}"


def _wallet(event: ev.WalletEvent) -> str:
    match event:
        case ev.AccountOpened():
            return f"{event.role} account opened"
        case ev.FundsDeposited():
            return f"{_dgpu(event.amount)} deposited"
        case ev.FundsHeld():
            return f"{_dgpu(event.amount)} held for {event.job_id} #{event.attempt}"
        case ev.FundsCharged():
            short = f", {format_dgpu(event.uncovered)} uncovered" if event.uncovered else ""
            return (
                f"charged {_dgpu(event.amount)} for {event.job_id} #{event.attempt} "
                f"(total {gpu_seconds(event.total_gpu_ms)}){short}"
            )
        case ev.ProviderCredited():
            return f"credited {_dgpu(event.amount)} for {event.job_id} #{event.attempt}"
        case ev.FeeCollected():
            return f"fee {_dgpu(event.amount)} for {event.job_id} #{event.attempt}"
        case ev.HoldReleased():
            return f"{_dgpu(event.amount)} released from {event.job_id} #{event.attempt}"
        case ev.LowFundsWarned():
            return (
                f"low funds for {event.job_id}: {_dgpu(event.needed)} needed, "
                f"{format_dgpu(event.available)} available; stops at {event.stop_at:%H:%M:%S}"
            )
        case (
            ev.LowFundsCleared()
            | ev.ChargeRefunded()
            | ev.CreditReversed()
            | ev.EarningsSettled()
            | ev.BudgetSet()
        ):
            return _refunds_and_budgets(event)
        case ev.WithdrawalRequested():
            return f"withdrawal {event.withdrawal_id} of {_dgpu(event.amount)} requested"
        case ev.PayoutSigned() | ev.FundsWithdrawn() | ev.WithdrawalFailed():
            return _payout(event)
        case _:
            return type(event).__name__


def _payout(event: ev.PayoutSigned | ev.FundsWithdrawn | ev.WithdrawalFailed) -> str:
    match event:
        case ev.PayoutSigned():
            return (
                f"withdrawal {event.withdrawal_id} signed (attempt {event.attempt}, "
                f"transaction {event.signature})"
            )
        case ev.FundsWithdrawn():
            paid = f" (transaction {event.signature})" if event.signature else ""
            return f"withdrawal {event.withdrawal_id} of {_dgpu(event.amount)} paid{paid}"
        case ev.WithdrawalFailed():
            return (
                f"withdrawal {event.withdrawal_id} of {_dgpu(event.amount)} failed, given "
                f"back: {event.reason}"
            )


def describe(event: ev.Event) -> str:
    """What `event` did, in one line."""
    match event:
        case ev.ProviderEvent():
            return _provider(event)
        case ev.JobEvent():
            return _job(event)
        case ev.WalletEvent():
            return _wallet(event)
        case ev.SettingsChanged():
            changed = ", ".join(f"{name} {getattr(event, name)}" for name in event.changed)
            return f"settings changed: {changed or 'none'}" + (
                f" ({event.source})" if event.source else ""
            )
        case ev.PaymentCredited():
            credited = f"{_dgpu(event.amount)} credited to {event.wallet_id}"
            return f"transaction {event.signature}: {credited}"
    return type(event).__name__
