"""What an agent reports about the jobs assigned to its provider."""

from __future__ import annotations

import msgspec

from dante.domain.deciders.context import Context
from dante.domain.deciders.providers import owned_provider
from dante.domain.decision import Decision, ResultOf
from dante.domain.model import JobState, World
from dante.domain.rejection import Rejected, unknown_job
from dante.schemas import commands as cmd
from dante.schemas import events as ev
from dante.schemas.results import JobResult
from dante.schemas.values import UsageTick

AgentCommand = (
    cmd.AcceptAssignment
    | cmd.DeclineAssignment
    | cmd.ReportJobStarted
    | cmd.RecordUsage
    | cmd.ReportJobFinished
)


def job_result(job: JobState, recorded_ticks: int = 0) -> JobResult:
    return JobResult(
        job_id=job.job_id, state=job.status, attempt=job.attempt, recorded_ticks=recorded_ticks
    )


def _assigned_job(world: World, ctx: Context, command: AgentCommand) -> JobState:
    """The job, checked to be this provider's current attempt (ended jobs pass through)."""
    owned_provider(world, ctx, command.provider_id)
    job = world.job(command.job_id)
    if not ran_on(world, job, command.provider_id):
        raise unknown_job(command.job_id)
    if job.ended and job.attempt == command.attempt and job.provider_id == command.provider_id:
        return job
    if job.provider_id != command.provider_id or job.attempt != command.attempt:
        raise Rejected(
            "wrong_state",
            f"attempt {command.attempt} of job {command.job_id} is not assigned to provider "
            f"{command.provider_id} (any more)",
            "attempt",
        )
    return job


def ran_on(world: World, job: JobState, provider_id: str) -> bool:
    """Whether an attempt of `job` is or was placed on `provider_id`: only then may that
    provider learn anything of the job (else it reads as no job at all)."""
    if not job.exists:
        return False
    if job.provider_id == provider_id:
        return True
    books = (world.books.get((job.job_id, n)) for n in range(1, job.attempt + 1))
    return any(book is not None and book.provider_id == provider_id for book in books)


def _result(job_id: str, recorded: int = 0) -> ResultOf:
    return lambda w: job_result(w.job(job_id), recorded)


def accept(world: World, ctx: Context, command: cmd.AcceptAssignment) -> Decision:
    job = _assigned_job(world, ctx, command)
    if job.ended:
        raise Rejected("job_finished", f"job {job.job_id} has already ended ({job.status})")
    if job.accepted or job.status == "running":
        return Decision.nothing(_result(job.job_id))
    event = ev.JobAccepted(**ctx.envelope(), job_id=job.job_id, attempt=command.attempt)
    return Decision.on(job.version, event, result=_result(job.job_id))


def decline(world: World, ctx: Context, command: cmd.DeclineAssignment) -> Decision:
    job = _assigned_job(world, ctx, command)
    if job.ended:
        raise Rejected("job_finished", f"job {job.job_id} has already ended ({job.status})")
    if job.declined:
        return Decision.nothing(_result(job.job_id))
    if job.status == "running":
        raise Rejected("wrong_state", f"job {job.job_id} is already running; report it finished")
    event = ev.JobDeclined(
        **ctx.envelope(), job_id=job.job_id, attempt=command.attempt, reason=command.reason
    )
    return Decision.on(job.version, event, result=_result(job.job_id))


def started(world: World, ctx: Context, command: cmd.ReportJobStarted) -> Decision:
    job = _assigned_job(world, ctx, command)
    if job.ended:
        raise Rejected("job_finished", f"job {job.job_id} has already ended ({job.status})")
    if job.status == "running":
        return Decision.nothing(_result(job.job_id))
    event = ev.JobStarted(**ctx.envelope(), job_id=job.job_id, attempt=command.attempt)
    return Decision.on(job.version, event, result=_result(job.job_id))


def _check_samples(job: JobState, tick: UsageTick, n: int) -> None:
    seen: set[int] = set()
    for m, sample in enumerate(tick.samples):
        where = f"ticks[{n}].samples[{m}].index"
        if sample.index not in job.gpu_indices:
            raise Rejected("invalid", f"GPU {sample.index} is not assigned to this job", where)
        if sample.index in seen:
            raise Rejected("invalid", f"two samples for GPU {sample.index} in one tick", where)
        seen.add(sample.index)


def _check_bound(ctx: Context, job: JobState, fresh: list[UsageTick]) -> None:
    """No GPU may report more time than the attempt has been running (plus some slack)."""
    assert job.started_at is not None
    running_ms = int((ctx.now - job.started_at).total_seconds() * 1000)
    totals = dict(job.attempt_gpu_ms)
    for tick in fresh:
        for sample in tick.samples:
            totals[sample.index] = totals.get(sample.index, 0) + sample.gpu_ms
    worst = max(totals.values(), default=0)
    if worst > running_ms + ctx.settings.usage_slack_ms:
        raise Rejected(
            "invalid",
            f"usage reports {worst} ms on one GPU, but the job has run only {running_ms} ms",
            "ticks",
        )


def _new_ticks(ctx: Context, job: JobState, ticks: list[UsageTick]) -> list[UsageTick]:
    """The ticks not recorded yet, checked against what the job could have used."""
    fresh: list[UsageTick] = []
    last = job.last_tick
    for n, tick in enumerate(ticks):
        if tick.seq <= job.last_tick:
            continue  # already recorded: a retry, not counted twice
        if tick.seq <= last:
            raise Rejected("invalid", "tick numbers must increase", f"ticks[{n}].seq")
        last = tick.seq
        _check_samples(job, tick, n)
        fresh.append(tick)
    if fresh:
        _check_bound(ctx, job, fresh)
    return fresh


def _mark_simulated(world: World, job: JobState, ticks: list[UsageTick]) -> list[UsageTick]:
    """Samples of GPUs the provider registered as simulated say so, whatever the agent sent:
    their telemetry is made up, and every statement and audit must show it."""
    provider = world.provider(job.provider_id)
    simulated = {gpu.index for gpu in provider.gpus if gpu.simulated}
    if not simulated:
        return ticks
    return [
        msgspec.structs.replace(
            tick,
            samples=[
                msgspec.structs.replace(sample, simulated=True)
                if sample.index in simulated and not sample.simulated
                else sample
                for sample in tick.samples
            ],
        )
        for tick in ticks
    ]


def usage(world: World, ctx: Context, command: cmd.RecordUsage) -> Decision:
    job = _assigned_job(world, ctx, command)
    if job.ended:
        raise Rejected(
            "job_finished",
            f"job {job.job_id} has ended ({job.status}); usage after its end is not recorded",
        )
    if job.status != "running":
        raise Rejected("wrong_state", f"job {job.job_id} has not started; report it started first")
    fresh = _new_ticks(ctx, job, command.ticks)
    if not fresh:
        return Decision.nothing(_result(job.job_id))
    fresh = _mark_simulated(world, job, fresh)
    event = ev.UsageRecorded(
        **ctx.envelope(), job_id=job.job_id, attempt=command.attempt, ticks=fresh
    )
    return Decision.on(job.version, event, result=_result(job.job_id, len(fresh)))


def finished(world: World, ctx: Context, command: cmd.ReportJobFinished) -> Decision:
    job = _assigned_job(world, ctx, command)
    if command.results is not None and not command.results.object.startswith(
        f"results/{job.job_id}/"
    ):
        # Results are uploaded through the service, which names them after the job.
        raise Rejected("invalid", "these results were not uploaded for this job", "results")
    envelope = ctx.envelope()
    job_id, attempt = job.job_id, command.attempt
    event: ev.Event
    if job.ended:
        if command.results is None or job.results == command.results:
            return Decision.nothing(_result(job_id))
        event = ev.JobResultsStored(
            **envelope,
            job_id=job_id,
            attempt=attempt,
            results=command.results,
            exit_code=command.exit_code,
        )
    elif command.interrupted and not job.cancel_requested:
        reason = command.error or "the provider's agent stopped the attempt"
        if job.attempt >= ctx.settings.max_attempts:
            event = ev.JobFailed(
                **envelope,
                job_id=job_id,
                attempt=attempt,
                reason=f"gave up after {attempt} attempts; the last: {reason}",
                results=command.results,
                lost=True,
            )
        else:
            event = ev.JobRequeued(
                **envelope,
                job_id=job_id,
                attempt=attempt,
                next_attempt=attempt + 1,
                provider_id=command.provider_id,
                reason=reason,
            )
    elif job.cancel_requested:
        event = ev.JobCancelled(
            **envelope,
            job_id=job_id,
            attempt=attempt,
            reason="cancelled by the renter",
            results=command.results,
        )
    elif command.error:
        event = ev.JobFailed(
            **envelope,
            job_id=job_id,
            attempt=attempt,
            reason=command.error,
            exit_code=command.exit_code,
            results=command.results,
        )
    elif command.exit_code == 0:
        event = ev.JobCompleted(
            **envelope, job_id=job_id, attempt=attempt, exit_code=0, results=command.results
        )
    else:
        reason = (
            "the job ended without an exit code"
            if command.exit_code is None
            else f"the job exited with code {command.exit_code}"
        )
        event = ev.JobFailed(
            **envelope,
            job_id=job_id,
            attempt=attempt,
            reason=reason,
            exit_code=command.exit_code,
            results=command.results,
        )
    return Decision.on(job.version, event, result=_result(job_id))
