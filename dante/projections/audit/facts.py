"""What the audit knows of jobs and their attempts, folded from the log as it goes.

Every family of checks reads these facts as they stood *before* the event it checks; the
auditor applies the event to them last. The fold is the audit's own, written from the rules
in docs/design.md rather than borrowed from the handlers, so a bug in the write model cannot
hide itself. It is faithful like the projections: an illegal event is applied as it says
(a job started twice is running), and the checks say what was illegal.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from dante.schemas import events as ev

#: Job states, as in `dante.domain.model.job`.
ENDED: Final = frozenset({"completed", "failed", "cancelled", "stopped"})
PLACED: Final = frozenset({"assigned", "running"})

AttemptKey = tuple[str, int]
Handler = Callable[[int, Any], None]


@dataclass(slots=True)
class Attempt:
    """One placement of a job: its terms, when it ran and ended, its usage and billing."""

    job_id: str
    attempt: int
    renter: str
    provider_id: str
    provider_owner: str
    gpu_indices: tuple[int, ...]
    price: int
    fee_bps: int
    assigned_seq: int
    started_seq: int = 0
    ended_seq: int = 0
    ended_at: datetime | None = None
    #: GPU time recorded so far, and at the attempt's end.
    recorded_ms: int = 0
    recorded_at_end: int = 0
    #: (sequence of a UsageRecorded, recorded total after it), not yet reached by a charge.
    usage: deque[tuple[int, int]] = field(default_factory=deque)
    #: Billing: the GPU time charged up to, the total charged and the fees collected.
    billed_ms: int = 0
    charged: int = 0
    fees: int = 0
    #: The billable part of `billed_ms` (less after a cancel plus the stop grace).
    billable_ms: int = 0
    #: The stop grace of its assignment, when it started and when its cancel was asked.
    stop_grace_s: int | None = None
    started_at: datetime | None = None
    cancel_at: datetime | None = None
    #: Lost to its provider (requeued, or the last attempt of a job that gave up): every
    #: charge of it is to be refunded, and nothing charged after the loss.
    lost: bool = False
    refunded: int = 0

    def billable(self, total_ms: int) -> int:
        """The rule of docs/design.md: after a cancel, at most the time until it plus the
        stop grace, on each GPU."""
        if self.stop_grace_s is None or self.cancel_at is None:
            return total_ms
        ran = 0
        if self.started_at is not None:
            ran = max(0, int((self.cancel_at - self.started_at).total_seconds() * 1000))
        return min(total_ms, (ran + self.stop_grace_s * 1000) * len(self.gpu_indices))

    @property
    def ended(self) -> bool:
        return self.ended_seq != 0


@dataclass(slots=True)
class Job:
    job_id: str
    renter: str = ""
    status: str = "new"
    #: The current (last assigned) attempt, 0 before the first.
    attempt: int = 0
    provider_id: str = ""
    max_price: int | None = None
    cancel_requested: bool = False


class Facts:
    """Jobs and attempts, plus where the auditor is: the message being checked."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.attempts: dict[AttemptKey, Attempt] = {}
        #: The message being checked: its sequence and atomic batch (None: a single append).
        self.seq = 0
        self.batch_id: str | None = None

    def job(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            job = self.jobs[job_id] = Job(job_id=job_id)
        return job

    def handlers(self) -> Mapping[type[ev.Event], Handler]:
        return {
            ev.JobSubmitted: self._submitted,
            ev.JobQueued: self._queued,
            ev.JobAssigned: self._assigned,
            ev.JobStarted: self._started,
            ev.UsageRecorded: self._usage,
            ev.JobCancelRequested: self._cancel_requested,
            ev.JobRequeued: self._requeued,
            ev.JobCompleted: self._ended,
            ev.JobFailed: self._ended,
            ev.JobCancelled: self._ended,
            ev.JobStopped: self._ended,
        }

    def _submitted(self, _seq: int, event: ev.JobSubmitted) -> None:
        job = self.job(event.job_id)
        job.renter = event.renter
        job.status = "queued"
        job.max_price = event.requirements.max_price

    def _queued(self, _seq: int, event: ev.JobQueued) -> None:
        self.job(event.job_id).status = "queued"

    def _assigned(self, seq: int, event: ev.JobAssigned) -> None:
        job = self.job(event.job_id)
        job.status = "assigned"
        job.attempt = event.attempt
        job.provider_id = event.provider_id
        self.attempts[(event.job_id, event.attempt)] = Attempt(
            job_id=event.job_id,
            attempt=event.attempt,
            renter=job.renter,
            provider_id=event.provider_id,
            provider_owner=event.provider_owner,
            gpu_indices=tuple(event.gpu_indices),
            price=event.price,
            fee_bps=event.fee_bps,
            assigned_seq=seq,
            stop_grace_s=event.stop_grace_s,
        )

    def _started(self, seq: int, event: ev.JobStarted) -> None:
        self.job(event.job_id).status = "running"
        attempt = self.attempts.get((event.job_id, event.attempt))
        if attempt is not None and not attempt.started_seq:
            attempt.started_seq = seq
            attempt.started_at = event.at

    def _usage(self, seq: int, event: ev.UsageRecorded) -> None:
        attempt = self.attempts.get((event.job_id, event.attempt))
        if attempt is not None:
            attempt.recorded_ms += event.gpu_ms
            attempt.usage.append((seq, attempt.recorded_ms))

    def _cancel_requested(self, _seq: int, event: ev.JobCancelRequested) -> None:
        job = self.job(event.job_id)
        job.cancel_requested = True
        attempt = self.attempts.get((event.job_id, job.attempt))
        if attempt is not None and job.status in PLACED and attempt.cancel_at is None:
            attempt.cancel_at = event.at

    def _end_attempt(self, seq: int, at: datetime, key: AttemptKey) -> None:
        attempt = self.attempts.get(key)
        if attempt is not None and not attempt.ended:
            attempt.ended_seq = seq
            attempt.ended_at = at
            attempt.recorded_at_end = attempt.recorded_ms

    def _requeued(self, seq: int, event: ev.JobRequeued) -> None:
        job = self.job(event.job_id)
        job.status = "queued"
        job.provider_id = ""
        self._end_attempt(seq, event.at, (event.job_id, event.attempt))
        attempt = self.attempts.get((event.job_id, event.attempt))
        if attempt is not None:
            attempt.lost = True

    def _ended(self, seq: int, event: ev.JobEvent) -> None:
        job = self.job(event.job_id)
        job.status = {
            ev.JobCompleted: "completed",
            ev.JobFailed: "failed",
            ev.JobCancelled: "cancelled",
            ev.JobStopped: "stopped",
        }[type(event)]
        if isinstance(event, ev.JobFailed) and event.lost:
            attempt = self.attempts.get((event.job_id, event.attempt or job.attempt))
            if attempt is not None and not attempt.ended:
                attempt.lost = True
        # The end of a job ends every attempt of it still open (billing settles them all).
        for number in range(1, job.attempt + 1):
            self._end_attempt(seq, event.at, (event.job_id, number))
