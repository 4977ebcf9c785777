"""Jobs: state, requirements, where each runs, its attempts, times, GPU time and charges.

GPU time (`gpu_ms`) adds up over the job's whole life; `attempt_gpu_ms` restarts with each
assignment. `charged_udgpu` is the sum of the `FundsCharged` (a wallet event) for the job, less
its `ChargeRefunded` (attempts lost to their provider).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import msgspec

from dante.projections.errors import UnknownEvent
from dante.projections.tables import NOTHING, Changed, Changes, Key, Projection, Row, Table, to_ms
from dante.schemas import events as ev
from dante.schemas.values import DockerPayload, FileRef

QUEUED: Final = "queued"
ASSIGNED: Final = "assigned"
RUNNING: Final = "running"
COMPLETED: Final = "completed"
FAILED: Final = "failed"
CANCELLED: Final = "cancelled"
STOPPED: Final = "stopped"
#: A job the log speaks of without having submitted it (shown, not hidden).
UNKNOWN: Final = "unknown"
STATES: Final = (QUEUED, ASSIGNED, RUNNING, COMPLETED, FAILED, CANCELLED, STOPPED, UNKNOWN)
ENDED: Final = frozenset({COMPLETED, FAILED, CANCELLED, STOPPED})

_json: Final = msgspec.json.Encoder()


def _to_json(value: object) -> str:
    return _json.encode(value).decode()


class JobRow(Row, kw_only=True):
    job_id: str
    renter: str = ""
    name: str = ""
    state: str = UNKNOWN
    #: The sequence of the job's first event: jobs are listed newest first by it.
    submitted_seq: int = 0
    submitted_at_ms: int | None = None
    gpu_count: int = 0
    gpu_model: str | None = None
    min_vram_gb: int | None = None
    max_price_udgpu: int | None = None
    max_duration_s: int | None = None
    requirements_json: str = "{}"
    #: docker or script; the image of the one, the interpreter of the other.
    payload_kind: str = ""
    image: str | None = None
    interpreter: str | None = None
    queue_code: str | None = None
    queue_reason: str = ""
    attempts: int = 0
    provider_id: str | None = None
    provider_owner: str | None = None
    gpu_indices_json: str = "[]"
    #: µdGPU per GPU-hour fixed for the current attempt.
    price_udgpu: int | None = None
    fee_bps: int | None = None
    assigned_at_ms: int | None = None
    accepted: bool = False
    started_at_ms: int | None = None
    attempt_started_at_ms: int | None = None
    finished_at_ms: int | None = None
    gpu_ms: int = 0
    attempt_gpu_ms: int = 0
    #: The agent's number of the last usage tick recorded for the current attempt.
    last_tick_seq: int = 0
    charged_udgpu: int = 0
    cancel_requested: bool = False
    end_code: str | None = None
    end_reason: str = ""
    exit_code: int | None = None
    results_json: str | None = None
    updated_seq: int = 0


JOBS: Final = Table(
    "job_records",
    JobRow,
    key=("job_id",),
    indexes=(("renter", "submitted_seq"), ("provider_id", "submitted_seq"), ("state",)),
)


@dataclass(slots=True)
class JobsView:
    jobs: dict[str, JobRow] = field(default_factory=dict)

    def get(self, table: str, key: Key) -> Row | None:
        if table != JOBS.name:
            raise KeyError(table)
        assert isinstance(key, str)
        return self.jobs.get(key)

    def put(self, table: str, key: Key, row: Row) -> None:
        if not isinstance(row, JobRow):
            raise TypeError(f"not a job row: {row!r} at {table}/{key}")
        self.jobs[row.job_id] = row


def _job(view: JobsView, job_id: str, seq: int) -> JobRow:
    row = view.jobs.get(job_id)
    if row is None:
        row = view.jobs[job_id] = JobRow(job_id=job_id, submitted_seq=seq)
    row.updated_seq = seq
    return row


def _submitted(row: JobRow, event: ev.JobSubmitted) -> None:
    requirements = event.requirements
    row.renter = event.renter
    row.name = event.name
    row.state = QUEUED
    row.submitted_at_ms = to_ms(event.at)
    row.gpu_count = requirements.gpu_count
    row.gpu_model = requirements.gpu_model
    row.min_vram_gb = requirements.min_vram_gb
    row.max_price_udgpu = requirements.max_price
    row.max_duration_s = requirements.max_duration_s
    row.requirements_json = _to_json(requirements)
    payload = event.payload
    if isinstance(payload, DockerPayload):
        row.payload_kind, row.image, row.interpreter = "docker", payload.image, None
    else:
        row.payload_kind, row.image, row.interpreter = "script", None, payload.interpreter
    row.attempts = 0


def _assigned(row: JobRow, event: ev.JobAssigned) -> None:
    row.state = ASSIGNED
    row.attempts = event.attempt
    row.provider_id = event.provider_id
    row.provider_owner = event.provider_owner
    row.gpu_indices_json = _to_json(event.gpu_indices)
    row.price_udgpu = event.price
    row.fee_bps = event.fee_bps
    row.assigned_at_ms = to_ms(event.at)
    row.accepted = False
    row.attempt_started_at_ms = None
    row.attempt_gpu_ms = 0
    row.last_tick_seq = 0
    row.queue_code = None
    row.queue_reason = ""


def _ended(
    row: JobRow,
    event: ev.JobEvent,
    state: str,
    *,
    code: str | None = None,
    reason: str = "",
    exit_code: int | None = None,
    results: FileRef | None = None,
) -> None:
    row.state = state
    row.finished_at_ms = to_ms(event.at)
    row.end_code = code
    row.end_reason = reason
    if exit_code is not None:
        row.exit_code = exit_code
    if results is not None:
        row.results_json = _to_json(results)


def _job_event(row: JobRow, event: ev.Event) -> None:
    match event:
        case ev.UsageRecorded():
            gpu_ms = event.gpu_ms
            row.gpu_ms += gpu_ms
            row.attempt_gpu_ms += gpu_ms
            row.last_tick_seq = max(row.last_tick_seq, *(tick.seq for tick in event.ticks))
        case ev.JobSubmitted():
            _submitted(row, event)
        case ev.JobQueued():
            row.state = QUEUED
            row.queue_code = event.code
            row.queue_reason = event.reason
        case ev.JobAssigned():
            _assigned(row, event)
        case ev.JobAccepted():
            row.accepted = True
        case ev.JobStarted():
            row.state = RUNNING
            at_ms = to_ms(event.at)
            if row.started_at_ms is None:
                row.started_at_ms = at_ms
            row.attempt_started_at_ms = at_ms
        case ev.JobCompleted():
            _ended(row, event, COMPLETED, exit_code=event.exit_code, results=event.results)
        case ev.JobFailed():
            _ended(
                row,
                event,
                FAILED,
                reason=event.reason,
                exit_code=event.exit_code,
                results=event.results,
            )
        case ev.JobCancelled():
            _ended(row, event, CANCELLED, reason=event.reason, results=event.results)
        case ev.JobStopped():
            _ended(row, event, STOPPED, code=event.code, reason=event.reason)
        case ev.JobCancelRequested():
            row.cancel_requested = True
        case ev.JobResultsStored():
            row.results_json = _to_json(event.results)
            if event.exit_code is not None:
                row.exit_code = event.exit_code
        case ev.JobRequeued():
            row.state = QUEUED
            row.provider_id = None
            row.provider_owner = None
            row.gpu_indices_json = "[]"
            row.accepted = False
            row.queue_code = "provider_lost"
            row.queue_reason = event.reason
        case ev.FundsCharged():
            row.charged_udgpu += event.amount
        case ev.ChargeRefunded():
            row.charged_udgpu -= event.amount
        case _:
            raise UnknownEvent("jobs", type(event).__name__)


#: Events that change no job.
IGNORED: Final[frozenset[type[ev.Event]]] = frozenset(
    {
        ev.SettingsChanged,
        ev.PayoutSigned,
        ev.WithdrawalFailed,
        ev.PaymentCredited,
        ev.ProviderCredited,
        ev.FeeCollected,
        ev.GpusReserved,
        ev.GpusReleased,
        ev.ProviderRegistered,
        ev.OfferUpdated,
        ev.ProviderWentOffline,
        ev.ProviderCameOnline,
        ev.ProviderDeregistered,
        ev.AccountOpened,
        ev.FundsDeposited,
        ev.FundsHeld,
        ev.HoldReleased,
        ev.LowFundsWarned,
        ev.LowFundsCleared,
        ev.CreditReversed,
        ev.EarningsSettled,
        ev.BudgetSet,
        ev.WithdrawalRequested,
        ev.FundsWithdrawn,
    }
)


def evolve(view: JobsView, seq: int, event: ev.Event) -> Changes:
    """Apply one event to the jobs; return the rows it changed."""
    if type(event) in IGNORED:
        return NOTHING
    match event:
        case ev.JobDeclined():
            # Informational: the scheduler follows with `JobRequeued`, which changes the job.
            return NOTHING
        case ev.JobEvent() | ev.FundsCharged() | ev.ChargeRefunded():
            _job_event(_job(view, event.job_id, seq), event)
            return (Changed(JOBS.name, event.job_id),)
    raise UnknownEvent("jobs", type(event).__name__)


JOBS_PROJECTION: Final = Projection(
    name="jobs",
    prefix="job",
    schema_version=1,
    tables=(JOBS,),
    empty=JobsView,
    evolve=evolve,
)
