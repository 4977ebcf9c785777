"""Jobs: every event legal in the job's state, and usage recorded only while an attempt runs.

The table of legal transitions is the one the deciders and handlers can produce
(`dante.domain.deciders`, the scheduler, billing), which `dante.domain.model.job` folds:

    new ──JobSubmitted──► queued ──JobAssigned(n+1)──► assigned ──JobStarted──► running
    queued ──JobQueued──► queued          assigned|running ──JobRequeued──► queued
    queued|assigned|running ──JobCancelled──► cancelled
    assigned|running ──JobCompleted|JobFailed|JobStopped──► completed|failed|stopped
    assigned: JobAccepted, JobDeclined; assigned|running: JobCancelRequested
    ended: JobResultsStored (results that arrived after the end)

Events that name an attempt must name the current one, a new assignment the next number,
and a requeue the next attempt and the provider it leaves.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from dante.projections.audit.facts import ENDED, PLACED, Facts, Handler, Job
from dante.projections.audit.report import Findings
from dante.schemas import events as ev

_QUEUED: Final = frozenset({"queued"})
_ASSIGNED: Final = frozenset({"assigned"})

#: For each job event, the states it may happen in.
LEGAL_FROM: Final[dict[type[ev.JobEvent], frozenset[str]]] = {
    ev.JobSubmitted: frozenset({"new"}),
    ev.JobQueued: _QUEUED,
    ev.JobAssigned: _QUEUED,
    ev.JobAccepted: _ASSIGNED,
    ev.JobDeclined: _ASSIGNED,
    ev.JobStarted: _ASSIGNED,
    ev.JobCancelRequested: PLACED,
    ev.JobCompleted: PLACED,
    ev.JobFailed: PLACED,
    ev.JobStopped: PLACED,
    ev.JobCancelled: _QUEUED | PLACED,
    ev.JobRequeued: PLACED,
    ev.JobResultsStored: ENDED,
}


class LifecycleChecks:
    def __init__(self, facts: Facts, findings: Findings) -> None:
        self._facts = facts
        self._findings = findings

    def handlers(self) -> Mapping[type[ev.Event], Handler]:
        on: dict[type[ev.Event], Handler] = dict.fromkeys(LEGAL_FROM, self._transition)
        on[ev.UsageRecorded] = self._usage
        return on

    def committed(self, seq: int) -> None:
        del seq

    def finish(self) -> None:
        return None

    def _illegal(self, seq: int, event: ev.JobEvent, why: str) -> None:
        self._findings.add(
            "illegal_transition",
            [seq],
            f"{type(event).__name__} at seq {seq}: {why}",
            job_id=event.job_id,
            attempt=getattr(event, "attempt", None),
        )

    def _transition(self, seq: int, event: Any) -> None:
        job = self._facts.jobs.get(event.job_id) or Job(job_id=event.job_id)
        allowed = LEGAL_FROM[type(event)]
        if job.status not in allowed:
            states = " or ".join(sorted(allowed))
            self._illegal(seq, event, f"the job is {job.status}, not {states}")
            return
        why = self._attempt_problem(job, event)
        if why:
            self._illegal(seq, event, why)

    @staticmethod
    def _attempt_problem(job: Job, event: Any) -> str:
        match event:
            case ev.JobAssigned():
                if event.attempt != job.attempt + 1:
                    return f"it assigns attempt {event.attempt}, the next is {job.attempt + 1}"
            case ev.JobRequeued():
                if event.attempt != job.attempt:
                    return f"it requeues attempt {event.attempt}, the current is {job.attempt}"
                if event.next_attempt != event.attempt + 1:
                    return f"the next attempt of {event.attempt} is not {event.next_attempt}"
                if event.provider_id != job.provider_id:
                    return f"the attempt runs on {job.provider_id}, not {event.provider_id}"
            case ev.JobCancelled() if job.status == "queued":
                if event.attempt not in (None, job.attempt):
                    return f"attempt {event.attempt} is not the job's ({job.attempt})"
            case (
                ev.JobAccepted()
                | ev.JobDeclined()
                | ev.JobStarted()
                | ev.JobCompleted()
                | ev.JobFailed()
                | ev.JobCancelled()
                | ev.JobStopped()
                | ev.JobResultsStored()
            ):
                if event.attempt is not None and event.attempt != job.attempt:
                    return f"attempt {event.attempt} is not the current attempt {job.attempt}"
            case _:
                pass
        return ""

    def _usage(self, seq: int, event: ev.UsageRecorded) -> None:
        attempt = self._facts.attempts.get((event.job_id, event.attempt))
        ids: dict[str, Any] = {"job_id": event.job_id, "attempt": event.attempt}
        if attempt is not None and attempt.ended:
            self._findings.add(
                "usage_after_end",
                [attempt.ended_seq, seq],
                f"{event.gpu_ms} ms of usage recorded at seq {seq}, after the attempt ended at "
                f"seq {attempt.ended_seq}",
                **ids,
            )
        elif attempt is None or not attempt.started_seq:
            self._findings.add(
                "usage_before_start",
                [seq],
                f"{event.gpu_ms} ms of usage recorded at seq {seq} for an attempt that "
                + ("was never assigned" if attempt is None else "has not started"),
                **ids,
            )
