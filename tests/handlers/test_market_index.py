"""The market index: the same placements as a full pass, kept current as providers change."""

from __future__ import annotations

import random

import pytest

from bench.placement import synthetic
from dante.domain import market
from dante.domain.model import World
from dante.domain.model.market import provider_slots
from dante.domain.placement import cheapest_price, place
from dante.events.codec import Recorded
from dante.schemas import events as ev
from dante.schemas.values import JobRequirements
from tests.factories import make, registered

REQUESTS = [
    JobRequirements(),
    JobRequirements(gpu_model="RTX 4090", max_price=1_000_000),
    JobRequirements(gpu_count=8, gpu_model="H100", min_vram_gb=80),
    JobRequirements(gpu_count=4, gpu_model="RTX", min_vram_gb=24),
    JobRequirements(gpu_model="H200"),
    JobRequirements(gpu_count=2, max_price=450_000),
]


@pytest.mark.parametrize("req", REQUESTS)
def test_stopping_early_by_price_places_as_a_full_pass(req: JobRequirements) -> None:
    providers = synthetic(2000, seed=3)
    ordered = sorted(providers, key=lambda p: (min(g.price for g in p.gpus), p.provider_id))
    floors = [min(g.price for g in p.gpus) for p in ordered]
    assert place(req, ordered, floors=floors) == place(req, providers)
    for busy in (False, True):
        assert cheapest_price(req, ordered, busy, floors=floors) == cheapest_price(
            req, providers, busy
        )


def test_the_market_follows_the_world() -> None:
    world = World()
    rng = random.Random(5)
    seq = 0

    def apply(event: ev.Event) -> None:
        nonlocal seq
        seq += 1
        world.apply(Recorded(seq=seq, subject="", stored_at=None, event=event))

    for n in range(30):
        apply(registered(f"prv-{n}", owner="bob", n=rng.randint(1, 4)))
    for round_ in range(40):
        req = JobRequirements(gpu_model="RTX 4090") if round_ % 2 else JobRequirements()
        found = market.place(world, req)
        fresh = [
            provider_slots(p, world.reliability_ppm(p.provider_id))
            for p in world.providers.values()
        ]
        assert found == place(req, fresh)
        if found is None:
            break
        apply(
            make(
                ev.GpusReserved,
                provider_id=found.provider_id,
                job_id=f"job-{round_}",
                attempt=1,
                gpu_indices=list(found.gpu_indices),
            )
        )
        if round_ % 5 == 0:
            apply(make(ev.ProviderDeregistered, provider_id=f"prv-{round_}"))
    assert [s.provider_id for s in market.all_slots(world)] == [
        p.provider_id for p in world.providers.values() if p.status != "deregistered"
    ]


def test_what_a_job_could_ever_cost_follows_offers() -> None:
    from dante.domain.settings import Settings
    from dante.schemas.values import GpuOffer

    world = World()
    seq = 0

    def apply(event: ev.Event) -> None:
        nonlocal seq
        seq += 1
        world.apply(Recorded(seq=seq, subject="", stored_at=None, event=event))

    apply(registered("prv-1", owner="bob", n=2))
    apply(registered("prv-2", owner="bob", n=2))
    req = JobRequirements(gpu_count=2)
    assert market.submission_check(world, req, Settings()).price == 500_000
    apply(make(ev.GpusReserved, provider_id="prv-1", job_id="j", attempt=1, gpu_indices=[0, 1]))
    assert market.submission_check(world, req, Settings()).price == 500_000
    offers = [GpuOffer(index=i, price=300_000) for i in range(2)]
    apply(make(ev.OfferUpdated, provider_id="prv-2", offers=offers))
    assert market.submission_check(world, req, Settings()).price == 300_000
    apply(make(ev.ProviderDeregistered, provider_id="prv-2"))
    assert market.submission_check(world, req, Settings()).price == 500_000


def test_a_gpu_dropped_and_listed_again_stays_taken_until_its_attempt_gives_it_back() -> None:
    world = World()
    seq = 0

    def apply(event: ev.Event) -> None:
        nonlocal seq
        seq += 1
        world.apply(Recorded(seq=seq, subject="", stored_at=None, event=event))

    apply(registered("prv-1", n=2))
    apply(make(ev.GpusReserved, provider_id="prv-1", job_id="j", attempt=1, gpu_indices=[1]))
    apply(registered("prv-1", n=1))  # the machine comes back without GPU 1 ...
    apply(registered("prv-1", n=2))  # ... and with it again, while attempt 1 still runs
    provider = world.provider("prv-1")
    assert not provider.is_free(1) and provider.reserved_by("j", 1) == [1]
    assert market.place(world, JobRequirements(gpu_count=2)) is None

    apply(make(ev.GpusReleased, provider_id="prv-1", job_id="j", attempt=1, gpu_indices=[1]))
    assert world.provider("prv-1").is_free(1)
