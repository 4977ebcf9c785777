"""The registry: providers, their GPUs and offers, whether they are free, and how reliable.

A GPU is free for offers when its provider is online, its offer is available and no job
attempt holds it. Reliability counts the attempts a provider completed against those it lost
(requeued away from it); uptime adds up the time between coming online and going away.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from dante.projections.errors import UnknownEvent
from dante.projections.tables import NOTHING, Changed, Changes, Key, Projection, Row, Table, to_ms
from dante.schemas import events as ev

PPM: Final = 1_000_000

ONLINE: Final = "online"
OFFLINE: Final = "offline"
DEREGISTERED: Final = "deregistered"


class ProviderRow(Row, kw_only=True):
    provider_id: str
    owner: str = ""
    name: str = ""
    location: str = ""
    payout_address: str = ""
    host: str = ""
    agent_version: str = ""
    #: online, offline or deregistered.
    status: str = OFFLINE
    #: Why it went offline or was deregistered.
    status_reason: str = ""
    first_registered_at_ms: int | None = None
    registered_at_ms: int | None = None
    last_seen_ms: int | None = None
    #: Online time accumulated over closed intervals, and when the open one began.
    online_ms: int = 0
    online_since_ms: int | None = None
    jobs_completed: int = 0
    jobs_lost: int = 0
    #: completed / (completed + lost) in parts per million; 1,000,000 with no history.
    reliability_ppm: int = PPM


class GpuRow(Row, kw_only=True):
    provider_id: str
    gpu_index: int
    uuid: str = ""
    vendor: str = ""
    model: str = ""
    vram_mb: int = 0
    vram_gb: int = 0
    simulated: bool = False
    #: Whether the provider's offer lists this GPU at all; an unlisted GPU is never rented.
    offered: bool = False
    #: µdGPU per GPU-hour.
    price_udgpu: int = 0
    available: bool = False
    busy_job_id: str | None = None
    busy_attempt: int | None = None
    #: No health events exist yet; kept so queries and the scheduler can already filter on it.
    healthy: bool = True


class AssignmentRow(Row, kw_only=True):
    """The provider a job's current attempt was placed on, until the attempt ends."""

    job_id: str
    attempt: int
    provider_id: str


PROVIDERS: Final = Table("registry_providers", ProviderRow, key=("provider_id",))
GPUS: Final = Table(
    "registry_gpus", GpuRow, key=("provider_id", "gpu_index"), indexes=(("model",),)
)
ASSIGNMENTS: Final = Table("registry_assignments", AssignmentRow, key=("job_id",))


@dataclass(slots=True)
class RegistryView:
    providers: dict[str, ProviderRow] = field(default_factory=dict)
    #: GPUs by provider, then by index.
    gpus: dict[str, dict[int, GpuRow]] = field(default_factory=dict)
    assignments: dict[str, AssignmentRow] = field(default_factory=dict)

    def get(self, table: str, key: Key) -> Row | None:
        if table == GPUS.name:
            assert isinstance(key, tuple)
            return self.gpus.get(key[0], {}).get(key[1])
        assert isinstance(key, str)
        if table == PROVIDERS.name:
            return self.providers.get(key)
        if table == ASSIGNMENTS.name:
            return self.assignments.get(key)
        raise KeyError(table)

    def put(self, table: str, key: Key, row: Row) -> None:
        if isinstance(row, GpuRow):
            self.gpus.setdefault(row.provider_id, {})[row.gpu_index] = row
        elif isinstance(row, ProviderRow):
            self.providers[row.provider_id] = row
        elif isinstance(row, AssignmentRow):
            self.assignments[row.job_id] = row
        else:
            raise TypeError(f"not a registry row: {row!r} at {table}/{key}")


def reliability_ppm(completed: int, lost: int) -> int:
    total = completed + lost
    return completed * PPM // total if total else PPM


def _provider(view: RegistryView, provider_id: str) -> ProviderRow:
    """The provider's row; an event about one never registered still gets one, shown as is."""
    row = view.providers.get(provider_id)
    if row is None:
        row = view.providers[provider_id] = ProviderRow(provider_id=provider_id)
    return row


def _online(row: ProviderRow, at_ms: int) -> None:
    if row.online_since_ms is None:
        row.online_since_ms = at_ms
    row.status = ONLINE
    row.status_reason = ""


def _away(row: ProviderRow, at_ms: int, status: str, reason: str) -> None:
    if row.online_since_ms is not None:
        # A clock that ran backwards between two events adds nothing rather than subtracting.
        row.online_ms += max(0, at_ms - row.online_since_ms)
        row.online_since_ms = None
    row.status = status
    row.status_reason = reason


def _registered(view: RegistryView, event: ev.ProviderRegistered) -> Changes:
    pid = event.provider_id
    row = _provider(view, pid)
    at_ms = to_ms(event.at)
    row.owner = event.owner
    row.name = event.name
    row.location = event.location
    row.payout_address = event.payout_address
    row.host = event.host
    row.agent_version = event.agent_version
    if row.first_registered_at_ms is None:
        row.first_registered_at_ms = at_ms
    row.registered_at_ms = at_ms
    _online(row, at_ms)
    changes: list[Changed] = [Changed(PROVIDERS.name, pid)]
    gpus = view.gpus.setdefault(pid, {})
    described = {gpu.index for gpu in event.gpus}
    for index in [i for i in gpus if i not in described]:
        del gpus[index]
        changes.append(Changed(GPUS.name, (pid, index)))
    offers = {offer.index: offer for offer in event.offers}
    for gpu in event.gpus:
        gpu_row = gpus.get(gpu.index)
        if gpu_row is None:
            # A GPU index new to this provider; a reservation on a kept index stays as it was.
            gpu_row = gpus[gpu.index] = GpuRow(provider_id=pid, gpu_index=gpu.index)
        gpu_row.uuid = gpu.uuid
        gpu_row.vendor = gpu.vendor
        gpu_row.model = gpu.model
        gpu_row.vram_mb = gpu.vram_mb
        gpu_row.vram_gb = gpu.vram_gb
        gpu_row.simulated = gpu.simulated
        offer = offers.get(gpu.index)
        gpu_row.offered = offer is not None
        gpu_row.price_udgpu = 0 if offer is None else offer.price
        gpu_row.available = offer is not None and offer.available
        changes.append(Changed(GPUS.name, (pid, gpu.index)))
    return changes


def _offer_updated(view: RegistryView, event: ev.OfferUpdated) -> Changes:
    gpus = view.gpus.get(event.provider_id, {})
    changes: list[Changed] = []
    for offer in event.offers:
        gpu_row = gpus.get(offer.index)
        if gpu_row is None:
            continue  # an offer for a GPU the provider never described offers nothing
        gpu_row.offered = True
        gpu_row.price_udgpu = offer.price
        gpu_row.available = offer.available
        changes.append(Changed(GPUS.name, (event.provider_id, offer.index)))
    return changes


def _reserved(view: RegistryView, event: ev.GpusReserved) -> Changes:
    gpus = view.gpus.get(event.provider_id, {})
    changes: list[Changed] = []
    for index in event.gpu_indices:
        gpu_row = gpus.get(index)
        if gpu_row is not None:
            gpu_row.busy_job_id = event.job_id
            gpu_row.busy_attempt = event.attempt
            changes.append(Changed(GPUS.name, (event.provider_id, index)))
    return changes


def _released(view: RegistryView, event: ev.GpusReleased) -> Changes:
    gpus = view.gpus.get(event.provider_id, {})
    changes: list[Changed] = []
    for index in event.gpu_indices:
        gpu_row = gpus.get(index)
        # Only the attempt that holds a GPU frees it: a late release of an earlier attempt
        # must not free a GPU a later one holds.
        if (
            gpu_row is not None
            and gpu_row.busy_job_id == event.job_id
            and gpu_row.busy_attempt == event.attempt
        ):
            gpu_row.busy_job_id = None
            gpu_row.busy_attempt = None
            changes.append(Changed(GPUS.name, (event.provider_id, index)))
    return changes


def _count(view: RegistryView, provider_id: str, *, completed: int, lost: int) -> Changed:
    row = _provider(view, provider_id)
    row.jobs_completed += completed
    row.jobs_lost += lost
    row.reliability_ppm = reliability_ppm(row.jobs_completed, row.jobs_lost)
    return Changed(PROVIDERS.name, provider_id)


def _attempt_ended(view: RegistryView, job_id: str, completed_attempt: int | None) -> Changes:
    assignment = view.assignments.pop(job_id, None)
    if assignment is None:
        return NOTHING
    changes = [Changed(ASSIGNMENTS.name, job_id)]
    if completed_attempt is not None and assignment.attempt == completed_attempt:
        changes.append(_count(view, assignment.provider_id, completed=1, lost=0))
    return changes


#: Events that change nothing in the registry (checked first: most of the log is usage and money).
IGNORED: Final[frozenset[type[ev.Event]]] = frozenset(
    {
        ev.SettingsChanged,
        ev.PayoutSigned,
        ev.WithdrawalFailed,
        ev.PaymentCredited,
        ev.UsageRecorded,
        ev.FundsCharged,
        ev.ProviderCredited,
        ev.FeeCollected,
        ev.JobSubmitted,
        ev.JobQueued,
        ev.JobAccepted,
        ev.JobDeclined,
        ev.JobStarted,
        ev.JobCancelRequested,
        ev.JobResultsStored,
        ev.AccountOpened,
        ev.FundsDeposited,
        ev.FundsHeld,
        ev.HoldReleased,
        ev.LowFundsWarned,
        ev.LowFundsCleared,
        ev.ChargeRefunded,
        ev.CreditReversed,
        ev.EarningsSettled,
        ev.BudgetSet,
        ev.WithdrawalRequested,
        ev.FundsWithdrawn,
    }
)


def evolve(view: RegistryView, seq: int, event: ev.Event) -> Changes:  # noqa: ARG001
    """Apply one event to the registry; return the rows it changed."""
    if type(event) in IGNORED:
        return NOTHING
    match event:
        case ev.GpusReserved():
            return _reserved(view, event)
        case ev.GpusReleased():
            return _released(view, event)
        case ev.ProviderRegistered():
            return _registered(view, event)
        case ev.OfferUpdated():
            return _offer_updated(view, event)
        case ev.ProviderWentOffline():
            row = _provider(view, event.provider_id)
            if event.last_seen is not None:
                row.last_seen_ms = to_ms(event.last_seen)
            if row.status != DEREGISTERED:
                _away(row, to_ms(event.at), OFFLINE, event.reason)
            return (Changed(PROVIDERS.name, event.provider_id),)
        case ev.ProviderCameOnline():
            row = _provider(view, event.provider_id)
            # Deregistration is the provider's own decision; only a new registration undoes it.
            if row.status != DEREGISTERED:
                _online(row, to_ms(event.at))
            return (Changed(PROVIDERS.name, event.provider_id),)
        case ev.ProviderDeregistered():
            row = _provider(view, event.provider_id)
            _away(row, to_ms(event.at), DEREGISTERED, event.reason)
            return (Changed(PROVIDERS.name, event.provider_id),)
        case ev.JobAssigned():
            view.assignments[event.job_id] = AssignmentRow(
                job_id=event.job_id, attempt=event.attempt, provider_id=event.provider_id
            )
            return (Changed(ASSIGNMENTS.name, event.job_id),)
        case ev.JobCompleted():
            return _attempt_ended(view, event.job_id, event.attempt)
        case ev.JobFailed() | ev.JobCancelled() | ev.JobStopped():
            return _attempt_ended(view, event.job_id, None)
        case ev.JobRequeued():
            changes = list(_attempt_ended(view, event.job_id, None))
            changes.append(_count(view, event.provider_id, completed=0, lost=1))
            return changes
    raise UnknownEvent("registry", type(event).__name__)


REGISTRY: Final = Projection(
    name="registry",
    prefix="registry",
    schema_version=1,
    tables=(PROVIDERS, GPUS, ASSIGNMENTS),
    empty=RegistryView,
    evolve=evolve,
)
