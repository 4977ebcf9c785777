"""The scheduler: places jobs on GPUs, requeues what is lost, frees GPUs when jobs end.

Placement is one atomic step: the GPUs are reserved on the provider (checked against the
provider's version, so two jobs never get the same GPU), the first hold is taken from the
renter's wallet (checked against the wallet's version, so funds are never promised twice),
and the job is assigned (checked against the job's version). A conflict on any of them means
the world moved: the runner re-reads and the scheduler decides again.

Decisions are level-based: each looks at the current state, not only at the trigger, so a
redelivered or late trigger decides nothing new. They are generators: the runner carries out
each step (and applies it to the world) before the next is decided, so a burst of placements
never promises the same GPU twice even before the log confirms it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Final

from dante.domain import market
from dante.domain.decision import Decision
from dante.domain.model import JobState, World
from dante.domain.placement import explain_no_fit
from dante.domain.settings import Settings
from dante.events.codec import Recorded
from dante.events.records import Append
from dante.schemas import events as ev
from dante.schemas.money import format_dgpu, period_ends
from dante.schemas.quotes import Placement

NAME: Final = "scheduler"


class Scheduler:
    name = NAME
    #: Acts on the whole log.
    subjects: str | None = None
    #: The event types `decide` acts on; the runner acknowledges others unread.
    triggers = frozenset(
        kind.__name__
        for kind in (
            ev.JobSubmitted,
            ev.JobRequeued,
            ev.ProviderRegistered,
            ev.ProviderCameOnline,
            ev.OfferUpdated,
            ev.GpusReleased,
            ev.FundsDeposited,
            ev.BudgetSet,
            ev.JobDeclined,
            ev.ProviderWentOffline,
            ev.ProviderDeregistered,
            ev.JobCompleted,
            ev.JobFailed,
            ev.JobCancelled,
            ev.JobStopped,
        )
    )

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()

    # ── triggers ────────────────────────────────────────────────────────────────────────

    def decide(self, world: World, recorded: Recorded, now: datetime) -> Iterator[Decision]:
        event = recorded.event
        match event:
            case ev.JobSubmitted():
                yield from self._place(world, [event.job_id], now)
            case ev.JobRequeued():
                # An agent that gave the attempt back leaves its GPUs reserved: free them.
                yield from self._free(world, event.job_id, event.attempt, event.provider_id, now)
                yield from self._place(world, [event.job_id], now)
            case (
                ev.ProviderRegistered()
                | ev.ProviderCameOnline()
                | ev.OfferUpdated()
                | ev.GpusReleased()
            ):
                # Capacity may have appeared: try the queue in submission order.
                yield from self._place(world, self._waiting(world), now)
            case ev.FundsDeposited() | ev.BudgetSet():
                mine = [j for j in self._waiting(world) if world.job(j).renter == event.wallet_id]
                yield from self._place(world, mine, now)
            case ev.JobDeclined():
                job = world.job(event.job_id)
                if job.placed and job.attempt == event.attempt:
                    reason = f"declined by the provider: {event.reason}".rstrip(": ")
                    yield self._lose(world, job, reason, now)
            case ev.ProviderWentOffline() | ev.ProviderDeregistered():
                reason = (
                    "the provider went offline"
                    if isinstance(event, ev.ProviderWentOffline)
                    else "the provider left the platform"
                )
                for job_id in sorted(world.placed_on.get(event.provider_id, ())):
                    job = world.job(job_id)
                    if job.placed and job.provider_id == event.provider_id:
                        yield self._lose(world, job, reason, now)
            case ev.JobCompleted() | ev.JobFailed() | ev.JobCancelled() | ev.JobStopped():
                yield from self._release(world, world.job(event.job_id), now)
            case _:
                return

    # ── time ────────────────────────────────────────────────────────────────────────────

    def due(self, world: World, now: datetime) -> Iterator[Decision]:
        """Assigned jobs not started in time are treated as declined; jobs waiting for a
        budget are tried again (a new day or month may have made room)."""
        budgeted = [j for j in world.waiting if world.job(j).queue_code == "budget_reached"]
        yield from self._place(world, sorted(budgeted, key=world.waiting.__getitem__), now)
        limit = timedelta(seconds=self.settings.start_timeout_s)
        late = [
            job_id
            for job_ids in world.placed_on.values()
            for job_id in job_ids
            if (job := world.job(job_id)).status == "assigned"
            and job.assigned_at is not None
            and now - job.assigned_at > limit
        ]
        for job_id in sorted(late):
            job = world.job(job_id)
            if job.status == "assigned":
                yield self._lose(
                    world, job, f"not started within {self.settings.start_timeout_s}s", now
                )

    # ── decisions ───────────────────────────────────────────────────────────────────────

    @staticmethod
    def _waiting(world: World) -> list[str]:
        return sorted(world.waiting, key=world.waiting.__getitem__)

    def _place(self, world: World, job_ids: list[str], now: datetime) -> Iterator[Decision]:
        """Place waiting jobs in submission order; each placement is its own step."""
        for job_id in job_ids:
            job = world.job(job_id)
            if job.status == "queued" and job.requirements is not None:
                step = self._place_one(world, job, now)
                if step is not None:
                    yield step

    def _place_one(self, world: World, job: JobState, now: datetime) -> Decision | None:
        assert job.requirements is not None
        req = job.requirements
        placement = market.place(world, req)
        if placement is None:
            if job.queue_code == "no_capacity":
                # Already says it waits for capacity. Explaining costs a pass over every
                # provider, and its counts (how many offline, how many busy) would change
                # the reason at every capacity change without telling the renter anything new.
                return None
            no_fit = explain_no_fit(req, market.all_slots(world))
            reason = no_fit.reason if no_fit else "no provider has room right now"
            return self._queue(job, "no_capacity", reason, now)
        hold, seconds = market.hold_for(placement.price, req, self.settings)
        wallet = world.wallet(job.renter)
        spendable, budget = wallet.spendable(now)
        if spendable < hold:
            first = (
                f"the first hold is {format_dgpu(hold)} dGPU "
                f"({seconds // 60} min at {format_dgpu(placement.price)} dGPU/h per GPU)"
            )
            if budget:
                # No amount left in the reason: it would change with every charge and
                # queue the job again each time.
                day_ends, month_ends = period_ends(now)
                ends = day_ends if budget == "daily" else month_ends
                reason = (
                    f"waiting for the {budget} budget: {first}, more than it leaves until "
                    f"{ends:%Y-%m-%d %H:%M} UTC (raise it with dante wallet budget)"
                )
                return self._queue(job, "budget_reached", reason, now)
            reason = (
                f"waiting for funds: {first}, {format_dgpu(wallet.available)} dGPU is available"
            )
            return self._queue(job, "insufficient_funds", reason, now)
        return self._assign(world, job, placement, hold, now)

    def _queue(
        self, job: JobState, code: ev.QueueReason, reason: str, now: datetime
    ) -> Decision | None:
        if job.queue_code == code and job.queue_reason == reason:
            return None  # already says so
        event = ev.JobQueued(
            event_id=f"{NAME}:queue:{job.job_id}:{job.version}",
            at=now,
            cause=f"seq:{job.version}",
            job_id=job.job_id,
            code=code,
            reason=reason,
        )
        return Decision(appends=[Append(event=event, expected=job.version)])

    def _assign(
        self, world: World, job: JobState, placement: Placement, hold: int, now: datetime
    ) -> Decision:
        attempt = job.attempt + 1
        provider = world.provider(placement.provider_id)
        wallet = world.wallet(job.renter)
        base = f"{NAME}:assign:{job.job_id}:{attempt}"
        cause = f"seq:{job.version}"
        indices = list(placement.gpu_indices)
        appends = [
            Append(
                event=ev.GpusReserved(
                    event_id=f"{base}:0",
                    at=now,
                    cause=cause,
                    provider_id=provider.provider_id,
                    job_id=job.job_id,
                    attempt=attempt,
                    gpu_indices=indices,
                ),
                expected=provider.version,
            )
        ]
        if hold > 0:
            appends.append(
                Append(
                    event=ev.FundsHeld(
                        event_id=f"{base}:1",
                        at=now,
                        cause=cause,
                        wallet_id=job.renter,
                        job_id=job.job_id,
                        attempt=attempt,
                        amount=hold,
                    ),
                    expected=wallet.version,
                )
            )
        appends.append(
            Append(
                event=ev.JobAssigned(
                    event_id=f"{base}:2",
                    at=now,
                    cause=cause,
                    job_id=job.job_id,
                    attempt=attempt,
                    provider_id=provider.provider_id,
                    provider_owner=provider.owner,
                    gpu_indices=indices,
                    price=placement.price,
                    fee_bps=self.settings.fee_bps,
                    hold=hold,
                    stop_grace_s=self.settings.stop_grace_s,
                ),
                expected=job.version,
            )
        )
        return Decision(appends=appends)

    def _lose(self, world: World, job: JobState, reason: str, now: datetime) -> Decision:
        """The attempt is lost: requeue the job, or end it, and free its GPUs."""
        attempt = job.attempt
        base = f"{NAME}:lost:{job.job_id}:{attempt}"
        cause = f"seq:{job.version}"
        event: ev.Event
        if job.cancel_requested:
            event = ev.JobCancelled(
                event_id=f"{base}:0",
                at=now,
                cause=cause,
                job_id=job.job_id,
                attempt=attempt,
                reason=f"cancelled by the renter; {reason}",
            )
        elif attempt >= self.settings.max_attempts:
            event = ev.JobFailed(
                event_id=f"{base}:0",
                at=now,
                cause=cause,
                job_id=job.job_id,
                attempt=attempt,
                reason=f"gave up after {attempt} attempts; the last: {reason}",
                lost=True,
            )
        else:
            event = ev.JobRequeued(
                event_id=f"{base}:0",
                at=now,
                cause=cause,
                job_id=job.job_id,
                attempt=attempt,
                next_attempt=attempt + 1,
                provider_id=job.provider_id,
                reason=reason,
            )
        appends = [Append(event=event, expected=job.version)]
        appends.extend(self._releases(world, job, f"{base}:r", now, reason))
        return Decision(appends=appends)

    def _free(
        self, world: World, job_id: str, attempt: int, provider_id: str, now: datetime
    ) -> Iterator[Decision]:
        provider = world.provider(provider_id)
        indices = provider.reserved_by(job_id, attempt)
        if indices:
            event = ev.GpusReleased(
                event_id=f"{NAME}:free:{job_id}:{attempt}",
                at=now,
                cause=f"seq:{world.job(job_id).version}",
                provider_id=provider_id,
                job_id=job_id,
                attempt=attempt,
                gpu_indices=indices,
                reason="attempt given back",
            )
            yield Decision(appends=[Append(event=event, expected=provider.version)])

    def _release(self, world: World, job: JobState, now: datetime) -> Iterator[Decision]:
        base = f"{NAME}:end:{job.job_id}:{job.attempt}"
        appends = self._releases(world, job, base, now, f"job {job.status}")
        if appends:
            yield Decision(appends=appends)

    @staticmethod
    def _releases(
        world: World, job: JobState, base: str, now: datetime, reason: str
    ) -> list[Append]:
        if not job.provider_id and job.attempt == 0:
            return []
        book = world.books.get((job.job_id, job.attempt))
        provider_id = job.provider_id or (book.provider_id if book else "")
        if not provider_id:
            return []
        provider = world.provider(provider_id)
        indices = provider.reserved_by(job.job_id, job.attempt)
        if not indices:
            return []
        event = ev.GpusReleased(
            event_id=base,
            at=now,
            cause=f"seq:{job.version}",
            provider_id=provider_id,
            job_id=job.job_id,
            attempt=job.attempt,
            gpu_indices=indices,
            reason=reason,
        )
        return [Append(event=event, expected=provider.version)]
