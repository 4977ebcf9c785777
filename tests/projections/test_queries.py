"""The read queries over a real SQLite file of folded views."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest

from dante.projections import (
    Views,
    balance,
    history,
    job,
    jobs,
    jobs_for_provider,
    list_offers,
    platform_summary,
    provider,
)
from dante.projections.matching import tokens_match
from dante.schemas import events as ev
from dante.schemas.values import GpuOffer
from tests.factories import NOW, SOLANA, deposit, gpu, make, submitted
from tests.projections.helpers import build

pytestmark = pytest.mark.anyio

DGPU = 1_000_000


def provider_with(
    pid: str,
    models: list[tuple[str, int, int]],
    *,
    location: str = "",
    minutes: int = 0,
    simulated: bool = False,
) -> ev.ProviderRegistered:
    """A provider whose GPU i has (model, VRAM in MiB, price), all offered."""
    gpus = [
        msgspec.structs.replace(gpu(i, model=m, vram_mb=vram), simulated=simulated)
        for i, (m, vram, _) in enumerate(models)
    ]
    return make(
        ev.ProviderRegistered,
        at=NOW + timedelta(minutes=minutes),
        provider_id=pid,
        owner="bob",
        name=f"box {pid}",
        location=location,
        payout_address=SOLANA,
        gpus=gpus,
        offers=[GpuOffer(index=i, price=price) for i, (_, _, price) in enumerate(models)],
    )


RTX = ("NVIDIA GeForce RTX 4090", 24564)
H100 = ("NVIDIA H100 80GB HBM3", 81559)


def assigned(job_id: str, provider_id: str, attempt: int = 1) -> ev.JobAssigned:
    return make(
        ev.JobAssigned,
        job_id=job_id,
        attempt=attempt,
        provider_id=provider_id,
        provider_owner="bob",
        gpu_indices=[0],
        price=1,
        fee_bps=500,
        hold=1,
    )


MARKET: list[ev.Event] = [
    provider_with("prv-a", [(*RTX, 500_000), (*RTX, 450_000)], location="Berlin, DE"),
    provider_with("prv-b", [(*H100, 4_000_000)] * 4, location="Austin, US"),
    provider_with("prv-c", [(*RTX, 300_000)], location="Lyon, FR", simulated=True),
    provider_with("prv-d", [(*RTX, 100_000)], location="Berlin, DE"),
    provider_with("prv-e", [(*RTX, 200_000)], location="Oslo, NO"),
    make(ev.ProviderWentOffline, provider_id="prv-d"),
    make(ev.ProviderDeregistered, provider_id="prv-e"),
    # prv-b: one H100 busy, one not available, so two free.
    make(ev.GpusReserved, provider_id="prv-b", job_id="job-1", attempt=1, gpu_indices=[0]),
    make(
        ev.OfferUpdated, provider_id="prv-b", offers=[GpuOffer(index=1, price=1, available=False)]
    ),
    # prv-a: one job completed; prv-c: one lost.
    assigned("job-2", "prv-a"),
    make(ev.JobCompleted, job_id="job-2", attempt=1),
    make(ev.JobRequeued, job_id="job-3", attempt=1, next_attempt=2, provider_id="prv-c"),
]


@pytest.fixture
async def market(tmp_path: Path) -> AsyncIterator[Views]:
    path = tmp_path / "views.db"
    await build(path, MARKET)
    async with await Views.open(path) as views:
        yield views


async def test_offers_list_online_providers_cheapest_first(market: Views) -> None:
    offers = await list_offers(market, now=NOW + timedelta(hours=1))
    assert [o.provider_id for o in offers] == ["prv-c", "prv-a", "prv-b"]
    a = offers[1]
    assert (a.models, a.vram_gb, a.gpus_free, a.gpus_total) == (
        ["NVIDIA GeForce RTX 4090"],
        24,
        2,
        2,
    )
    assert (a.price_min_udgpu, a.price_max_udgpu, a.location, a.status) == (
        450_000,
        500_000,
        "Berlin, DE",
        "online",
    )
    assert (a.jobs_completed, a.reliability_ppm, a.uptime_ppm) == (1, 1_000_000, 1_000_000)
    b = offers[2]
    # Busy GPUs count in the total; unavailable ones are not offered at all.
    assert (b.gpus_free, b.gpus_total, b.vram_gb) == (2, 3, 80)
    assert offers[0].simulated
    assert not a.simulated


async def test_offers_filter_by_model_vram_count_price_and_location(market: Views) -> None:
    async def ids(**filters: object) -> list[str]:
        return [o.provider_id for o in await list_offers(market, **filters)]  # type: ignore[arg-type]

    assert await ids(gpu_model="h100") == ["prv-b"]
    assert await ids(gpu_model="rtx4090") == ["prv-c", "prv-a"]
    assert await ids(gpu_model="RTX 40") == []
    assert await ids(min_vram_gb=48) == ["prv-b"]
    assert await ids(gpu_count=2) == ["prv-a", "prv-b"]
    assert await ids(gpu_count=3) == []
    assert await ids(max_price=450_000) == ["prv-c", "prv-a"]
    assert await ids(location="berlin") == ["prv-a"]
    assert await ids(location="berlin", include_offline=True) == ["prv-d", "prv-a"]


async def test_offers_sort_by_reliability_and_take_a_matcher(market: Views) -> None:
    offers = await list_offers(market, sort="reliability")
    assert [(o.provider_id, o.reliability_ppm) for o in offers] == [
        ("prv-a", 1_000_000),
        ("prv-b", 1_000_000),
        ("prv-c", 0),
    ]

    def only_h100(requested: str, model: str) -> bool:
        assert requested == "anything"
        return "H100" in model

    assert [
        o.provider_id for o in await list_offers(market, gpu_model="anything", matcher=only_h100)
    ] == ["prv-b"]


async def test_offline_providers_show_no_free_gpus_and_deregistered_ones_never_show(
    market: Views,
) -> None:
    offers = await list_offers(market, include_offline=True)
    assert "prv-e" not in [o.provider_id for o in offers]
    offline = next(o for o in offers if o.provider_id == "prv-d")
    assert (offline.status, offline.gpus_free, offline.gpus_total) == ("offline", 0, 1)


def test_the_default_matcher_matches_every_requested_token() -> None:
    assert tokens_match("4090", "NVIDIA GeForce RTX 4090")
    assert tokens_match("rtx 4090", "NVIDIA GeForce RTX 4090")
    assert tokens_match("A100", "NVIDIA A100-SXM4-80GB")
    assert not tokens_match("A100", "NVIDIA H100 80GB HBM3")
    assert not tokens_match("rtx 40", "NVIDIA GeForce RTX 4090")


async def test_a_provider_view_has_its_gpus_and_uptime(market: Views) -> None:
    found = await provider(market, "prv-b", now=NOW + timedelta(hours=2))
    assert found is not None
    assert (found.status, found.uptime_ppm, len(found.gpus)) == ("online", 1_000_000, 4)
    assert [(g.index, g.free, g.busy_job_id) for g in found.gpus] == [
        (0, False, "job-1"),
        (1, False, None),
        (2, True, None),
        (3, True, None),
    ]
    offline = await provider(market, "prv-d", now=NOW + timedelta(hours=2))
    assert offline is not None
    assert offline.uptime_ppm == 0
    assert await provider(market, "nope") is None


async def test_uptime_is_the_online_share_since_first_registration(tmp_path: Path) -> None:
    path = tmp_path / "views.db"
    await build(
        path,
        [
            provider_with("prv-a", [(*RTX, 1)]),
            make(ev.ProviderWentOffline, provider_id="prv-a", at=NOW + timedelta(minutes=30)),
            make(ev.ProviderCameOnline, provider_id="prv-a", at=NOW + timedelta(minutes=60)),
        ],
    )
    async with await Views.open(path) as views:
        found = await provider(views, "prv-a", now=NOW + timedelta(minutes=90))
    assert found is not None
    assert (found.online_ms, found.uptime_ppm) == (30 * 60_000, 666_666)


async def test_balance_and_history_of_a_wallet(tmp_path: Path) -> None:
    path = tmp_path / "views.db"
    held = make(ev.FundsHeld, wallet_id="alice", job_id="job-1", attempt=1, amount=2 * DGPU)
    warned = make(
        ev.LowFundsWarned,
        wallet_id="alice",
        job_id="job-1",
        attempt=1,
        needed=DGPU,
        available=0,
        stop_at=NOW + timedelta(minutes=5),
    )
    # job-2's attempt ended (its hold spent, in a log from before billing cleared such
    # warnings): its warning is not shown.
    stale = msgspec.structs.replace(warned, event_id="w-2", job_id="job-2")
    ended = make(ev.JobCompleted, job_id="job-2", attempt=1)
    await build(
        path,
        [
            *[deposit("alice", 3), deposit("bob", 1), held, warned, deposit("alice", 1)],
            *[submitted("job-1"), assigned("job-1", "prv-a"), submitted("job-2")],
            *[assigned("job-2", "prv-a"), stale, ended],
        ],
    )
    async with await Views.open(path) as views:
        alice = await balance(views, "alice")
        assert (alice.available_udgpu, alice.held_udgpu, alice.total_udgpu) == (
            2 * DGPU,
            2 * DGPU,
            4 * DGPU,
        )
        assert (alice.deposited_udgpu, alice.warnings_total, alice.role) == (4 * DGPU, 2, "renter")
        assert [(w.job_id, w.needed_udgpu, w.stop_at) for w in alice.warnings] == [
            ("job-1", DGPU, NOW + timedelta(minutes=5))
        ]
        assert [(h.job_id, h.held_udgpu) for h in alice.holds] == [("job-1", 2 * DGPU)]
        nobody = await balance(views, "nobody")
        assert (nobody.available_udgpu, nobody.total_udgpu, nobody.warnings) == (0, 0, [])
        entries = await history(views, "alice")
        assert [(e.seq, e.kind) for e in entries] == [(5, "deposit"), (3, "hold"), (1, "deposit")]
        assert entries[1].available_delta_udgpu == -2 * DGPU
        assert entries[1].at == NOW
        page = await history(views, "alice", limit=1, before_seq=5)
        assert [e.seq for e in page] == [3]
        assert await history(views, "nobody") == []


async def test_jobs_newest_first_by_renter_state_and_provider(tmp_path: Path) -> None:
    path = tmp_path / "views.db"
    await build(
        path,
        [
            submitted("job-1", "alice"),
            submitted("job-2", "carol"),
            submitted("job-3", "alice"),
            assigned("job-1", "prv-a"),
            make(ev.JobStarted, job_id="job-1", attempt=1),
            make(ev.JobCompleted, job_id="job-1", attempt=1),
            assigned("job-3", "prv-a"),
        ],
    )
    async with await Views.open(path) as views:
        assert [j.job_id for j in await jobs(views)] == ["job-3", "job-2", "job-1"]
        assert [j.job_id for j in await jobs(views, renter="alice")] == ["job-3", "job-1"]
        assert [j.job_id for j in await jobs(views, state="queued")] == ["job-2"]
        assert [j.job_id for j in await jobs(views, renter="alice", limit=1)] == ["job-3"]
        assert [j.job_id for j in await jobs_for_provider(views, "prv-a")] == ["job-3", "job-1"]
        done = await jobs_for_provider(views, "prv-a", state="completed")
        assert [j.job_id for j in done] == ["job-1"]
        found = await job(views, "job-3")
        assert found is not None
        assert (found.state, found.gpu_indices, found.requirements.gpu_count) == (
            "assigned",
            [0],
            1,
        )
        assert await job(views, "nope") is None


async def test_the_platform_summary_counts_providers_gpus_and_jobs(market: Views) -> None:
    summary = await platform_summary(market)
    assert summary.position == len(MARKET)
    assert summary.providers == {"online": 3, "offline": 1, "deregistered": 1}
    # Deregistered providers' GPUs are not counted; offline ones' are, but never free.
    assert (summary.gpus_total, summary.gpus_busy, summary.gpus_free) == (8, 1, 5)
    assert summary.jobs == {"completed": 1, "queued": 1}
