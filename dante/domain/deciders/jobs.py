"""Renters submitting and cancelling jobs."""

from __future__ import annotations

from msgspec.structs import replace

from dante.domain import market
from dante.domain.deciders.agent import job_result
from dante.domain.deciders.context import Context
from dante.domain.decision import Decision
from dante.domain.model import World
from dante.domain.rejection import Rejected, unknown_job
from dante.schemas import commands as cmd
from dante.schemas import events as ev
from dante.schemas.money import format_dgpu, period_ends
from dante.schemas.results import JobResult, SubmitResult
from dante.schemas.values import check_relative_path


def submit(world: World, ctx: Context, command: cmd.SubmitJob) -> Decision:
    for n, ref in enumerate(command.inputs):
        try:
            check_relative_path(ref.path)
        except ValueError as exc:
            raise Rejected("invalid", str(exc), f"inputs[{n}].path") from None
    paths = [ref.path for ref in command.inputs]
    if len(set(paths)) != len(paths):
        raise Rejected("invalid", "two inputs go to the same path", "inputs")
    req = command.requirements
    check = market.submission_check(world, req, ctx.settings)
    wallet = world.wallet(ctx.identity)
    for budget, cap in (("daily", wallet.budget_daily), ("monthly", wallet.budget_monthly)):
        # A hold the cap itself cannot take never fits. One that today's (or this month's)
        # spending leaves no room for is accepted and waits, saying so, for the next period.
        if cap is not None and check.first_hold > cap:
            raise Rejected(
                "budget_reached",
                f"this job needs {format_dgpu(check.first_hold)} dGPU held before it starts, "
                f"more than your whole {budget} budget of {format_dgpu(cap)} dGPU; raise it "
                f"with `dante wallet budget --{budget} AMOUNT`, or give the job a shorter "
                "--max-hours",
                "requirements",
            )
    if wallet.available < check.first_hold:
        where = (
            f"the offer it would be placed on now, provider {check.placement.provider_id}"
            if check.placement is not None
            else "the cheapest matching offer; none is free now"
        )
        raise Rejected(
            "insufficient_funds",
            f"this job needs {format_dgpu(check.first_hold)} dGPU held before it starts "
            f"({req.gpu_count} GPU x {format_dgpu(check.price)} dGPU/h for "
            f"{check.hold_seconds // 60} min at {where}), but only "
            f"{format_dgpu(wallet.available)} dGPU is available; deposit "
            f"{format_dgpu(check.first_hold - wallet.available)} dGPU more",
            "requirements",
        )
    job_id = ctx.derived_id("job")
    job = world.job(job_id)
    event = ev.JobSubmitted(
        **ctx.envelope(),
        job_id=job_id,
        renter=ctx.identity,
        name=command.name,
        requirements=req,
        payload=command.payload,
        inputs=command.inputs,
    )

    # Accepted, but the budget leaves less than the first hold until the period ends: the
    # renter is told at once that nothing is held before then (the scheduler waits likewise).
    spendable, budget = wallet.spendable(ctx.now)
    waits = budget if budget and spendable < check.first_hold else ""
    day_ends, month_ends = period_ends(ctx.now)

    def result(w: World) -> SubmitResult:
        return SubmitResult(
            job_id=job_id,
            state=w.job(job_id).status,
            price_udgpu=check.price,
            first_hold_udgpu=check.first_hold,
            available_now=check.price_now is not None,
            waits_for_budget=waits,
            budget_room_at=(day_ends if waits == "daily" else month_ends) if waits else None,
        )

    return Decision.on(job.version, event, result=result)


def cancel(world: World, ctx: Context, command: cmd.CancelJob) -> Decision:
    job = world.job(command.job_id)
    if not job.exists or job.renter != ctx.identity:
        raise unknown_job(command.job_id)
    job_id = job.job_id
    if job.ended:
        raise Rejected("job_finished", f"job {job_id} has already ended ({job.status})", "job_id")
    book = world.books.get((job_id, job.attempt))
    grace = book.stop_grace_s if book is not None and job.placed else None

    def result(w: World) -> JobResult:
        return replace(job_result(w.job(job_id)), stop_grace_s=grace)

    if job.cancel_requested:
        return Decision.nothing(result)
    reason = command.reason or "cancelled by the renter"
    event: ev.Event
    if job.status == "queued":
        # Nothing runs and nothing is held: the job ends here.
        event = ev.JobCancelled(**ctx.envelope(), job_id=job_id, reason=reason)
    else:
        # The agent stops it, uploads what it made, and reports it cancelled.
        event = ev.JobCancelRequested(
            **ctx.envelope(), job_id=job_id, by=ctx.identity, reason=reason
        )
    return Decision.on(job.version, event, result=result)
