"""A job: its specification, where its current attempt runs, its usage and how it ended."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec
from msgspec.structs import replace

from dante.schemas import events as ev
from dante.schemas.values import FileRef, JobPayload, JobRequirements

JobStatus = Literal[
    "new", "queued", "assigned", "running", "completed", "failed", "cancelled", "stopped"
]
ENDED: frozenset[str] = frozenset({"completed", "failed", "cancelled", "stopped"})


class JobState(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    job_id: str
    version: int = 0
    #: Stream sequence of `JobSubmitted`: the job's place in the queue.
    submitted_seq: int = 0
    renter: str = ""
    name: str = ""
    requirements: JobRequirements | None = None
    payload: JobPayload | None = None
    inputs: tuple[FileRef, ...] = ()
    submitted_at: datetime | None = None
    status: JobStatus = "new"
    queue_code: str = ""
    queue_reason: str = ""
    #: The current attempt (0 before the first assignment).
    attempt: int = 0
    provider_id: str = ""
    provider_owner: str = ""
    gpu_indices: tuple[int, ...] = ()
    price: int = 0
    fee_bps: int = 0
    assigned_at: datetime | None = None
    accepted: bool = False
    declined: bool = False
    started_at: datetime | None = None
    first_started_at: datetime | None = None
    #: The last usage tick recorded for the current attempt, and its GPU time per GPU.
    last_tick: int = 0
    attempt_gpu_ms: dict[int, int] = msgspec.field(default_factory=dict)
    total_gpu_ms: int = 0
    cancel_requested: bool = False
    ended_at: datetime | None = None
    end_code: str = ""
    end_reason: str = ""
    exit_code: int | None = None
    results: FileRef | None = None
    requeues: int = 0

    @property
    def exists(self) -> bool:
        return self.status != "new"

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    @property
    def placed(self) -> bool:
        """Assigned or running: an attempt holds GPUs of a provider."""
        return self.status in ("assigned", "running")


def _ended(
    state: JobState, seq: int, event: ev.JobEvent, status: JobStatus, **fields: object
) -> JobState:
    return replace(state, version=seq, status=status, ended_at=event.at, **fields)


def evolve_job(state: JobState, event: ev.Event, seq: int) -> JobState:
    """The job after `event`, appended at stream sequence `seq`."""
    match event:
        case ev.JobSubmitted():
            return replace(
                state,
                version=seq,
                submitted_seq=seq,
                renter=event.renter,
                name=event.name,
                requirements=event.requirements,
                payload=event.payload,
                inputs=tuple(event.inputs),
                submitted_at=event.at,
                status="queued",
            )
        case ev.JobQueued():
            return replace(
                state,
                version=seq,
                status="queued",
                queue_code=event.code,
                queue_reason=event.reason,
            )
        case ev.JobAssigned():
            return replace(
                state,
                version=seq,
                status="assigned",
                queue_code="",
                queue_reason="",
                attempt=event.attempt,
                provider_id=event.provider_id,
                provider_owner=event.provider_owner,
                gpu_indices=tuple(event.gpu_indices),
                price=event.price,
                fee_bps=event.fee_bps,
                assigned_at=event.at,
                accepted=False,
                declined=False,
                started_at=None,
                last_tick=0,
                attempt_gpu_ms={},
            )
        case ev.JobAccepted():
            return replace(state, version=seq, accepted=True)
        case ev.JobDeclined():
            return replace(state, version=seq, declined=True)
        case ev.JobStarted():
            return replace(
                state,
                version=seq,
                status="running",
                started_at=event.at,
                first_started_at=state.first_started_at or event.at,
            )
        case ev.UsageRecorded():
            per_gpu = dict(state.attempt_gpu_ms)
            for tick in event.ticks:
                for sample in tick.samples:
                    per_gpu[sample.index] = per_gpu.get(sample.index, 0) + sample.gpu_ms
            return replace(
                state,
                version=seq,
                last_tick=max(state.last_tick, *(t.seq for t in event.ticks)),
                attempt_gpu_ms=per_gpu,
                total_gpu_ms=state.total_gpu_ms + event.gpu_ms,
            )
        case ev.JobCompleted():
            return _ended(
                state,
                seq,
                event,
                "completed",
                exit_code=event.exit_code,
                results=event.results,
                end_code="completed",
            )
        case ev.JobFailed():
            return _ended(
                state,
                seq,
                event,
                "failed",
                exit_code=event.exit_code,
                results=event.results or state.results,
                end_code="failed",
                end_reason=event.reason,
            )
        case ev.JobCancelRequested():
            return replace(state, version=seq, cancel_requested=True)
        case ev.JobCancelled():
            return _ended(
                state,
                seq,
                event,
                "cancelled",
                results=event.results or state.results,
                end_code="cancelled",
                end_reason=event.reason,
            )
        case ev.JobStopped():
            return _ended(
                state, seq, event, "stopped", end_code=event.code, end_reason=event.reason
            )
        case ev.JobResultsStored():
            exit_code = event.exit_code if event.exit_code is not None else state.exit_code
            return replace(state, version=seq, results=event.results, exit_code=exit_code)
        case ev.JobRequeued():
            return replace(
                state,
                version=seq,
                status="queued",
                queue_code="provider_lost",
                queue_reason=event.reason,
                provider_id="",
                provider_owner="",
                gpu_indices=(),
                started_at=None,
                accepted=False,
                declined=False,
                requeues=state.requeues + 1,
            )
        case _:
            raise TypeError(f"{type(event).__name__} is not a job event")
