"""The registry fold: providers, GPUs, offers, reservations, status, reliability, uptime."""

from __future__ import annotations

from datetime import timedelta

from dante.projections.registry import (
    ASSIGNMENTS,
    GPUS,
    PROVIDERS,
    REGISTRY,
    RegistryView,
    reliability_ppm,
)
from dante.projections.tables import Changed
from dante.schemas import events as ev
from dante.schemas.values import GpuOffer
from tests.factories import NOW, SOLANA, gpu, make, registered
from tests.projections.helpers import fold, fold_changes


def assigned(job_id: str = "job-1", attempt: int = 1, provider: str = "prv-1") -> ev.JobAssigned:
    return make(
        ev.JobAssigned,
        job_id=job_id,
        attempt=attempt,
        provider_id=provider,
        provider_owner="bob",
        gpu_indices=[0],
        price=500_000,
        fee_bps=500,
        hold=1_000_000,
    )


def reserve(indices: list[int], job_id: str = "job-1", attempt: int = 1) -> ev.GpusReserved:
    return make(
        ev.GpusReserved, provider_id="prv-1", job_id=job_id, attempt=attempt, gpu_indices=indices
    )


def release(indices: list[int], job_id: str = "job-1", attempt: int = 1) -> ev.GpusReleased:
    return make(
        ev.GpusReleased, provider_id="prv-1", job_id=job_id, attempt=attempt, gpu_indices=indices
    )


def test_a_registration_lists_the_provider_online_with_its_gpus_and_offers() -> None:
    event = make(
        ev.ProviderRegistered,
        provider_id="prv-1",
        owner="bob",
        name="box",
        location="Berlin, DE",
        payout_address=SOLANA,
        gpus=[gpu(0), gpu(1, model="NVIDIA H100 80GB HBM3", vram_mb=81559)],
        offers=[GpuOffer(index=0, price=450_000)],
        host="box.local",
        agent_version="0.1.0",
    )
    view, changes = fold_changes(REGISTRY, [event])
    provider = view.providers["prv-1"]
    assert (provider.owner, provider.name, provider.location) == ("bob", "box", "Berlin, DE")
    assert (provider.status, provider.host, provider.agent_version) == (
        "online",
        "box.local",
        "0.1.0",
    )
    assert provider.first_registered_at_ms == provider.online_since_ms is not None
    offered, unlisted = view.gpus["prv-1"][0], view.gpus["prv-1"][1]
    assert (offered.offered, offered.available, offered.price_udgpu) == (True, True, 450_000)
    assert (offered.model, offered.vram_gb, offered.healthy) == (
        "NVIDIA GeForce RTX 4090",
        24,
        True,
    )
    # A GPU without an offer entry is not offered at all.
    assert (unlisted.offered, unlisted.available, unlisted.price_udgpu) == (False, False, 0)
    assert unlisted.vram_gb == 80
    assert set(changes) == {
        Changed(PROVIDERS.name, "prv-1"),
        Changed(GPUS.name, ("prv-1", 0)),
        Changed(GPUS.name, ("prv-1", 1)),
    }


def test_a_new_registration_replaces_the_description_and_keeps_reservations() -> None:
    later = NOW + timedelta(hours=1)
    again = make(
        ev.ProviderRegistered,
        at=later,
        provider_id="prv-1",
        owner="bob",
        name="renamed",
        payout_address=SOLANA,
        gpus=[gpu(1, model="NVIDIA GeForce RTX 4080")],
        offers=[GpuOffer(index=1, price=300_000, available=False)],
    )
    view, changes = fold_changes(
        REGISTRY,
        [
            registered(n=3),
            reserve([1, 2]),
            make(ev.ProviderWentOffline, provider_id="prv-1"),
            again,
        ],
    )
    provider = view.providers["prv-1"]
    assert (provider.name, provider.status) == ("renamed", "online")
    assert provider.first_registered_at_ms is not None
    assert provider.registered_at_ms is not None
    assert provider.registered_at_ms > provider.first_registered_at_ms
    # GPU 0 and 2 are gone; GPU 1 is described anew and stays reserved.
    assert list(view.gpus["prv-1"]) == [1]
    kept = view.gpus["prv-1"][1]
    assert (kept.model, kept.busy_job_id, kept.busy_attempt) == (
        "NVIDIA GeForce RTX 4080",
        "job-1",
        1,
    )
    assert (kept.price_udgpu, kept.available) == (300_000, False)
    assert Changed(GPUS.name, ("prv-1", 0)) in changes
    assert Changed(GPUS.name, ("prv-1", 2)) in changes


def test_an_offer_update_changes_only_the_listed_gpus() -> None:
    update = make(
        ev.OfferUpdated,
        provider_id="prv-1",
        offers=[GpuOffer(index=1, price=123, available=False), GpuOffer(index=9, price=1)],
    )
    view, changes = fold_changes(REGISTRY, [registered(n=2), update])
    first, second = view.gpus["prv-1"][0], view.gpus["prv-1"][1]
    assert (first.price_udgpu, first.available) == (500_000, True)
    assert (second.price_udgpu, second.available, second.offered) == (123, False, True)
    # An offer for a GPU the provider never described offers nothing.
    assert 9 not in view.gpus["prv-1"]
    assert list(changes) == [Changed(GPUS.name, ("prv-1", 1))]


def test_status_follows_offline_online_and_deregistration() -> None:
    events: list[ev.Event] = [registered()]
    view = fold(REGISTRY, events)
    assert view.providers["prv-1"].status == "online"
    events.append(
        make(ev.ProviderWentOffline, provider_id="prv-1", last_seen=NOW, reason="silent for 30s")
    )
    view = fold(REGISTRY, events)
    row = view.providers["prv-1"]
    assert (row.status, row.status_reason, row.last_seen_ms) == (
        "offline",
        "silent for 30s",
        row.registered_at_ms,
    )
    events.append(make(ev.ProviderCameOnline, provider_id="prv-1"))
    assert fold(REGISTRY, events).providers["prv-1"].status == "online"
    events.append(make(ev.ProviderDeregistered, provider_id="prv-1", reason="retired"))
    row = fold(REGISTRY, events).providers["prv-1"]
    assert (row.status, row.status_reason) == ("deregistered", "retired")
    # Deregistration sticks until the provider registers again.
    events.append(make(ev.ProviderCameOnline, provider_id="prv-1"))
    events.append(make(ev.ProviderWentOffline, provider_id="prv-1"))
    assert fold(REGISTRY, events).providers["prv-1"].status == "deregistered"
    events.append(registered())
    assert fold(REGISTRY, events).providers["prv-1"].status == "online"


def test_uptime_adds_up_the_online_intervals() -> None:
    def at(minutes: int) -> dict[str, object]:
        return {"at": NOW + timedelta(minutes=minutes)}

    view = fold(
        REGISTRY,
        [
            registered(),  # online from 0
            make(ev.ProviderWentOffline, provider_id="prv-1", **at(10)),
            make(ev.ProviderCameOnline, provider_id="prv-1", **at(30)),
            make(ev.ProviderCameOnline, provider_id="prv-1", **at(35)),  # already online
            make(ev.ProviderDeregistered, provider_id="prv-1", **at(40)),
        ],
    )
    row = view.providers["prv-1"]
    assert (row.online_ms, row.online_since_ms) == (20 * 60_000, None)


def test_reservations_make_gpus_busy_and_only_their_attempt_frees_them() -> None:
    view = fold(REGISTRY, [registered(n=3), reserve([0, 1]), reserve([2], "job-2")])
    gpus = view.gpus["prv-1"]
    assert [(g.busy_job_id, g.busy_attempt) for g in gpus.values()] == [
        ("job-1", 1),
        ("job-1", 1),
        ("job-2", 1),
    ]
    view = fold(
        REGISTRY,
        [
            registered(n=3),
            reserve([0, 1]),
            release([0, 1]),
            reserve([0], attempt=2),
            release([0, 1], attempt=1),  # late release of the earlier attempt
            release([2], "job-9"),  # never held by that job
            reserve([7]),  # no such GPU
        ],
    )
    gpus = view.gpus["prv-1"]
    assert [(g.busy_job_id, g.busy_attempt) for g in gpus.values()] == [
        ("job-1", 2),
        (None, None),
        (None, None),
    ]


def test_reliability_counts_completed_attempts_against_lost_ones() -> None:
    view = fold(
        REGISTRY,
        [
            registered(),
            assigned("job-1"),
            make(ev.JobCompleted, job_id="job-1", attempt=1),
            assigned("job-2"),
            make(ev.JobRequeued, job_id="job-2", attempt=1, next_attempt=2, provider_id="prv-1"),
            assigned("job-2", attempt=2),
            make(ev.JobCompleted, job_id="job-2", attempt=2),
            assigned("job-3"),
            make(ev.JobFailed, job_id="job-3", attempt=1, reason="exit 1"),
            make(ev.JobCompleted, job_id="job-3", attempt=1),  # no assignment left to count
            assigned("job-4"),
            make(ev.JobCompleted, job_id="job-4", attempt=2),  # not the assigned attempt
        ],
    )
    row = view.providers["prv-1"]
    assert (row.jobs_completed, row.jobs_lost) == (2, 1)
    assert row.reliability_ppm == 666_666
    assert view.assignments == {}


def test_reliability_without_history_is_full() -> None:
    assert reliability_ppm(0, 0) == 1_000_000
    assert reliability_ppm(0, 3) == 0
    assert reliability_ppm(3, 1) == 750_000


def test_an_assignment_is_tracked_until_its_attempt_ends() -> None:
    view, changes = fold_changes(REGISTRY, [assigned("job-1", attempt=3, provider="prv-9")])
    assert view.assignments["job-1"].provider_id == "prv-9"
    assert list(changes) == [Changed(ASSIGNMENTS.name, "job-1")]
    view, changes = fold_changes(
        REGISTRY,
        [
            assigned("job-1", attempt=3, provider="prv-9"),
            make(ev.JobStopped, job_id="job-1", code="operator"),
        ],
    )
    assert view.assignments == {}
    assert list(changes) == [Changed(ASSIGNMENTS.name, "job-1")]


def test_events_about_an_unregistered_provider_are_shown_not_hidden() -> None:
    view = fold(
        REGISTRY,
        [make(ev.JobRequeued, job_id="job-1", attempt=1, next_attempt=2, provider_id="prv-x")],
    )
    row = view.providers["prv-x"]
    assert (row.status, row.owner, row.jobs_lost) == ("offline", "", 1)
    assert isinstance(view, RegistryView)
