"""Placement: one provider, one price class, price -> reliability -> fragmentation -> id."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dante.domain.placement import (
    NEVER_CODES,
    GpuSlot,
    ProviderSlots,
    cheapest_price,
    explain_no_fit,
    place,
    quote,
)
from dante.domain.pricing import model_matches, whole_gb
from dante.schemas.money import cost, fee_of
from dante.schemas.quotes import Placement
from dante.schemas.values import JobRequirements

RTX = "NVIDIA GeForce RTX 4090"
H100 = "NVIDIA H100 80GB HBM3"
H100_PCIE = "NVIDIA H100 PCIe"
A100 = "NVIDIA A100-SXM4-40GB"


def g(
    index: int,
    price: int = 500_000,
    *,
    model: str = RTX,
    vram_mb: int = 24564,
    free: bool = True,
) -> GpuSlot:
    return GpuSlot(index=index, model=model, vram_mb=vram_mb, price=price, free=free)


def prov(
    provider_id: str,
    *gpus: GpuSlot,
    online: bool = True,
    reliability: int = 990_000,
    owner: str = "bob",
) -> ProviderSlots:
    return ProviderSlots(
        provider_id=provider_id,
        owner=owner,
        online=online,
        reliability_ppm=reliability,
        location="eu",
        gpus=tuple(gpus),
    )


def req(**fields: Any) -> JobRequirements:
    return JobRequirements(**fields)


def where(placement: Placement | None) -> tuple[str, tuple[int, ...], int] | None:
    if placement is None:
        return None
    return placement.provider_id, placement.gpu_indices, placement.price


# ── the ordering ──────────────────────────────────────────────────────────────────────────


def test_a_single_free_gpu_is_placed() -> None:
    result = place(req(), [prov("p1", g(0, free=False), g(1), g(2))])
    assert result == Placement(
        provider_id="p1", owner="bob", gpu_indices=(1,), price=500_000, leftover_free=1
    )


def test_price_comes_first() -> None:
    providers = [
        prov("reliable", g(0, 600_000), reliability=1_000_000),
        prov("cheap", g(0, 400_000), reliability=500_000),
    ]
    assert where(place(req(), providers)) == ("cheap", (0,), 400_000)


def test_then_reliability() -> None:
    providers = [
        prov("a", g(0), reliability=900_000),
        prov("b", g(0), reliability=950_000),
        prov("c", g(0), reliability=940_000),
    ]
    assert where(place(req(), providers)) == ("b", (0,), 500_000)


def test_then_least_fragmentation_counting_every_free_gpu() -> None:
    providers = [
        prov("roomy", g(0), g(1), g(2)),  # 3 free: placing 2 leaves 1
        prov("snug", g(0), g(1)),  # 2 free: placing 2 leaves 0
        prov("mixed", g(0), g(1), g(2, model=A100)),  # the A100 is free too: leaves 1
        prov("busy", g(0), g(1), g(2, free=False)),  # a busy GPU is not left free: leaves 0
    ]
    result = place(req(gpu_count=2), providers)
    assert result is not None
    assert (result.provider_id, result.leftover_free) == ("busy", 0)
    assert where(place(req(gpu_count=2), providers[:3])) == ("snug", (0, 1), 500_000)
    mixed = place(req(gpu_count=2), [providers[0], providers[2]])
    assert mixed is not None
    assert (mixed.provider_id, mixed.leftover_free) == ("mixed", 1)  # ties with roomy: by id


def test_then_provider_id_whatever_the_input_order() -> None:
    providers = [prov(pid, g(0)) for pid in ("p3", "p1", "p2")]
    for _ in range(5):
        random.shuffle(providers)
        assert where(place(req(), providers)) == ("p1", (0,), 500_000)


def test_a_job_runs_on_one_provider_only() -> None:
    providers = [prov("p1", g(0)), prov("p2", g(0))]
    assert place(req(gpu_count=2), providers) is None
    assert where(place(req(gpu_count=2), [*providers, prov("p3", g(4), g(7))])) == (
        "p3",
        (4, 7),
        500_000,
    )


def test_the_lowest_free_indices_whatever_the_gpu_order() -> None:
    p = prov("p1", g(5), g(3), g(1, free=False), g(0, model=A100), g(4), g(2))
    assert where(place(req(gpu_count=3, gpu_model="RTX 4090"), [p])) == ("p1", (2, 3, 4), 500_000)


# ── one price per placement ───────────────────────────────────────────────────────────────


def test_all_gpus_of_a_placement_share_one_price() -> None:
    p = prov("p1", g(0, 400_000), g(1, 500_000), g(2, 500_000), g(3, 600_000), g(4, 600_000))
    assert where(place(req(), [p])) == ("p1", (0,), 400_000)
    assert where(place(req(gpu_count=2), [p])) == ("p1", (1, 2), 500_000)
    assert place(req(gpu_count=3), [p]) is None
    # The cheapest class that is large enough, even on a dearer provider's cheap rival.
    other = prov("p2", g(0, 550_000), g(1, 550_000), g(2, 550_000))
    assert where(place(req(gpu_count=3), [p, other])) == ("p2", (0, 1, 2), 550_000)


def test_mixed_prices_never_fit_and_say_so() -> None:
    p = prov("p1", g(0, 400_000), g(1, 500_000))
    assert place(req(gpu_count=2), [p]) is None
    no_fit = explain_no_fit(req(gpu_count=2), [p])
    assert no_fit is not None
    assert (no_fit.code, no_fit.never) == ("mixed_prices", True)
    assert "p1" in no_fit.reason
    assert "one price" in no_fit.reason


# ── filters ───────────────────────────────────────────────────────────────────────────────


def test_offline_providers_are_ignored() -> None:
    providers = [prov("off", g(0, 100_000), online=False), prov("on", g(0, 900_000))]
    assert where(place(req(), providers)) == ("on", (0,), 900_000)
    assert place(req(), providers[:1]) is None


def test_busy_gpus_are_never_chosen() -> None:
    p = prov("p1", g(0, 100_000, free=False), g(1, 900_000))
    assert where(place(req(), [p])) == ("p1", (1,), 900_000)
    assert place(req(gpu_count=2), [p]) is None


def test_model_or_family() -> None:
    providers = [
        prov("a100", g(0, 100_000, model=A100)),
        prov("sxm", g(0, 300_000, model=H100)),
        prov("pcie", g(0, 200_000, model=H100_PCIE)),
        prov("rtx", g(0, 50_000)),
    ]
    assert where(place(req(gpu_model="H100"), providers)) == ("pcie", (0,), 200_000)
    assert where(place(req(gpu_model="=H100"), providers)) == ("sxm", (0,), 300_000)
    assert where(place(req(gpu_model="A100"), providers)) == ("a100", (0,), 100_000)
    assert where(place(req(gpu_model="rtx4090"), providers)) == ("rtx", (0,), 50_000)
    assert where(place(req(), providers)) == ("rtx", (0,), 50_000)
    assert place(req(gpu_model="A10"), providers) is None


@pytest.mark.parametrize(
    ("vram_mb", "fits"),
    [(24564, True), (24064, True), (24063, False), (0, False)],  # 24064 MiB rounds up to 24 GB
)
def test_min_vram_uses_whole_gb_rounded_half_up(vram_mb: int, fits: bool) -> None:
    p = prov("p1", g(0, vram_mb=vram_mb))
    assert (place(req(min_vram_gb=24), [p]) is not None) is fits
    assert place(req(min_vram_gb=0), [p]) is not None


def test_price_cap_is_inclusive() -> None:
    p = prov("p1", g(0, 500_000))
    assert place(req(max_price=500_000), [p]) is not None
    assert place(req(max_price=499_999), [p]) is None


def test_a_cap_picks_a_class_under_it() -> None:
    p = prov("p1", g(0, 400_000), g(1, 400_000), g(2, 300_000))
    assert where(place(req(gpu_count=2, max_price=450_000), [p])) == ("p1", (0, 1), 400_000)
    assert where(place(req(max_price=350_000), [p])) == ("p1", (2,), 300_000)


# ── why not ───────────────────────────────────────────────────────────────────────────────


def test_explain_is_none_when_the_job_fits() -> None:
    assert explain_no_fit(req(), [prov("p1", g(0))]) is None


@pytest.mark.parametrize(
    ("requirements", "providers", "fragment"),
    [
        (req(), [], "no registered provider has any GPU"),
        (req(), [prov("p1")], "no registered provider has any GPU"),
        (req(gpu_model="H200"), [prov("p1", g(0))], "matching 'H200'"),
        (
            req(gpu_model="RTX 4090", min_vram_gb=48),
            [prov("p1", g(0)), prov("p2", g(0, vram_mb=16_000, model="RTX 4080"))],
            "no registered 'RTX 4090' GPU has at least 48 GB of VRAM (the most is 24 GB)",
        ),
        (
            req(gpu_count=3),
            [prov("p1", g(0), g(1)), prov("p2", g(0))],
            "the most on one provider is 2",
        ),
        (
            req(gpu_count=2, min_vram_gb=40),
            [prov("p1", g(0, model=A100, vram_mb=40_960), g(1))],
            "the most on one provider is 1",
        ),
    ],
)
def test_no_such_gpus(
    requirements: JobRequirements, providers: list[ProviderSlots], fragment: str
) -> None:
    no_fit = explain_no_fit(requirements, providers)
    assert no_fit is not None
    assert (no_fit.code, no_fit.never, no_fit.cheapest_price) == ("no_such_gpus", True, None)
    assert fragment in no_fit.reason


def test_offline_and_busy_providers_count_for_never() -> None:
    # An offline provider's GPUs exist: the job is not impossible, it waits.
    no_fit = explain_no_fit(req(gpu_count=2), [prov("p1", g(0), g(1), online=False)])
    assert no_fit is not None
    assert (no_fit.code, no_fit.never) == ("no_capacity", False)


def test_price_cap_too_low_gives_the_cheapest_that_would_fit() -> None:
    providers = [
        prov("p1", g(0, 700_000), g(1, 700_000)),
        prov("p2", g(0, 600_000), g(1, 600_000), online=False),
        prov("p3", g(0, 100_000)),  # cheap, but only one GPU
        prov("p4", g(0, 200_000), g(1, 300_000)),  # cheap, but two prices
    ]
    no_fit = explain_no_fit(req(gpu_count=2, max_price=500_000), providers)
    assert no_fit is not None
    assert (no_fit.code, no_fit.never, no_fit.cheapest_price) == (
        "price_cap_too_low",
        True,
        600_000,
    )
    assert "0.5 dGPU" in no_fit.reason
    assert "0.6 dGPU" in no_fit.reason


def test_no_capacity_counts_offline_and_busy() -> None:
    providers = [
        prov("p1", g(0, 400_000, free=False), g(1, 400_000)),
        prov("p2", g(0, 300_000), g(1, 300_000), online=False),
        prov("p3", g(0, 400_000), g(1, 400_000, model=A100), g(2, 400_000, free=False)),
        prov("p4", g(0, 900_000), g(1, 900_000)),  # above the cap: not counted
    ]
    job = req(gpu_count=2, gpu_model="RTX 4090", max_price=500_000)
    assert place(job, providers) is None
    no_fit = explain_no_fit(job, providers)
    assert no_fit is not None
    assert (no_fit.code, no_fit.never, no_fit.cheapest_price) == ("no_capacity", False, 300_000)
    assert "3 provider(s)" in no_fit.reason
    assert "1 offline, 2 busy" in no_fit.reason
    assert "no_capacity" not in NEVER_CODES
    assert {"no_such_gpus", "mixed_prices", "price_cap_too_low"} == NEVER_CODES


def test_cheapest_price_now_and_ever() -> None:
    providers = [
        prov("p1", g(0, 300_000, free=False)),
        prov("p2", g(0, 200_000), online=False),
        prov("p3", g(0, 500_000)),
    ]
    assert cheapest_price(req(), providers) == 500_000
    assert cheapest_price(req(), providers, include_busy=False) == 500_000
    assert cheapest_price(req(), providers, include_busy=True) == 200_000
    assert cheapest_price(req(max_price=100_000), providers, include_busy=True) is None
    assert cheapest_price(req(gpu_count=2), providers, include_busy=True) is None


# ── quotes ────────────────────────────────────────────────────────────────────────────────


def test_quote_arithmetic_is_exact() -> None:
    providers = [prov("p1", g(0, 980_450), g(1, 980_450), g(2, 980_450))]
    q = quote(req(gpu_count=2), providers, duration_s=5400, fee_bps=500)
    assert q is not None
    assert q.available_now
    assert q.placement is not None
    assert q.placement.gpu_indices == (0, 1)
    assert (q.provider_id, q.price, q.price_per_hour, q.duration_s) == (
        "p1",
        980_450,
        1_960_900,
        5400,
    )
    assert q.total == 2_941_350  # 1,960,900 x 1.5 h
    assert q.fee == 147_067  # 5 % of 2,941,350 = 147,067.5, rounded down
    assert q.provider_share == 2_794_283
    assert q.fee + q.provider_share == q.total
    assert q.fee_bps == 500


def test_quote_duration_defaults() -> None:
    providers = [prov("p1", g(0, 1_000_000))]
    assert (q := quote(req(max_duration_s=60), providers, None, 500)) is not None
    assert (q.duration_s, q.total) == (60, 16_666)  # 1,000,000 / 60, rounded down
    assert (q := quote(req(), providers, None, 500)) is not None
    assert (q.duration_s, q.total, q.fee, q.fee_bps) == (3600, 1_000_000, 50_000, 500)
    assert (q := quote(req(max_duration_s=60), providers, 7200, 500)) is not None
    assert q.total == 2_000_000
    assert (q := quote(req(), providers, 0, 500)) is not None
    assert q.total == q.fee == q.provider_share == 0
    # Rounded down once: 3,599,999 per hour for one second is 999.9997 µdGPU.
    assert (q := quote(req(), [prov("p1", g(0, 3_599_999))], 1, 0)) is not None
    assert q.total == 999


def test_quote_when_nothing_is_free_now_prices_the_cheapest_that_could_fit() -> None:
    providers = [
        prov("p1", g(0, 300_000, free=False)),
        prov("p2", g(0, 200_000), online=False),
    ]
    q = quote(req(), providers, None, fee_bps=0)
    assert q is not None
    assert (q.available_now, q.placement, q.provider_id, q.price) == (False, None, "p2", 200_000)
    assert (q.fee, q.provider_share) == (0, 200_000)
    assert quote(req(gpu_model="H100"), providers, None, 500) is None


def test_quote_refuses_bad_arguments() -> None:
    providers = [prov("p1", g(0))]
    with pytest.raises(ValueError, match="negative"):
        quote(req(), providers, -1, 500)
    with pytest.raises(ValueError, match="fee_bps"):
        quote(req(), providers, None, 10_001)


def test_a_generator_of_providers_is_read_once() -> None:
    providers = [prov("p1", g(0, free=False)), prov("p2", g(0, 700_000))]
    q = quote(req(), (p for p in providers), None, 500)
    assert q is not None
    assert q.provider_id == "p2"
    assert explain_no_fit(req(gpu_count=2), (p for p in providers)) is not None


# ── properties ────────────────────────────────────────────────────────────────────────────

MODELS = [RTX, "RTX 4090", "NVIDIA GeForce RTX 4080 SUPER", H100, H100_PCIE, A100, "Apple M2 Max"]
REQUESTED = [None, "RTX 4090", "RTX", "H100", "=H100", "A100", "M2", "4080", "H200"]
PRICES = [100_000, 200_000, 300_000]


@st.composite
def providers_st(draw: st.DrawFn) -> list[ProviderSlots]:
    ids = draw(st.lists(st.sampled_from([f"p{i}" for i in range(12)]), unique=True, max_size=8))
    result = []
    for pid in ids:
        count = draw(st.integers(0, 5))
        indices = draw(st.permutations(range(count)))
        gpus = tuple(
            GpuSlot(
                index=index,
                model=draw(st.sampled_from(MODELS)),
                vram_mb=draw(st.sampled_from([16_376, 24_063, 24_064, 40_960, 81_559])),
                price=draw(st.sampled_from(PRICES)),
                free=draw(st.booleans()),
            )
            for index in indices
        )
        result.append(
            ProviderSlots(
                provider_id=pid,
                owner="bob",
                online=draw(st.booleans()),
                reliability_ppm=draw(st.sampled_from([900_000, 1_000_000])),
                location="eu",
                gpus=gpus,
            )
        )
    return result


requirements_st = st.builds(
    JobRequirements,
    gpu_count=st.integers(1, 4),
    gpu_model=st.sampled_from(REQUESTED),
    min_vram_gb=st.sampled_from([None, 0, 16, 24, 40, 80]),
    max_price=st.sampled_from([None, *PRICES, 150_000]),
)


def _eligible(r: JobRequirements, gpu: GpuSlot) -> bool:
    return (
        (r.gpu_model is None or model_matches(r.gpu_model, gpu.model))
        and (r.min_vram_gb is None or whole_gb(gpu.vram_mb) >= r.min_vram_gb)
        and (r.max_price is None or gpu.price <= r.max_price)
    )


def _candidates(
    r: JobRequirements, providers: Sequence[ProviderSlots], *, ever: bool
) -> list[tuple[tuple[int, int, int, str], tuple[int, ...]]]:
    """Every (key, indices) a placement could take, by brute force."""
    out = []
    for p in providers:
        if not (ever or p.online):
            continue
        free = [x for x in p.gpus if ever or x.free]
        for price in {x.price for x in free}:
            cls = sorted(x.index for x in free if x.price == price and _eligible(r, x))
            if len(cls) >= r.gpu_count:
                key = (price, -p.reliability_ppm, len(free) - r.gpu_count, p.provider_id)
                out.append((key, tuple(cls[: r.gpu_count])))
    return out


@settings(max_examples=300)
@given(requirements_st, providers_st(), st.randoms())
def test_place_is_the_best_valid_placement(
    r: JobRequirements, providers: list[ProviderSlots], rng: random.Random
) -> None:
    result = place(r, providers)
    candidates = _candidates(r, providers, ever=False)
    if result is None:
        assert candidates == []
        return
    by_id = {p.provider_id: p for p in providers}
    p = by_id[result.provider_id]
    slots = {x.index: x for x in p.gpus}
    chosen = [slots[i] for i in result.gpu_indices]
    # It satisfies the requirements, on free GPUs of one online provider, at one price.
    assert p.online
    assert p.owner == result.owner
    assert len(set(result.gpu_indices)) == r.gpu_count
    assert list(result.gpu_indices) == sorted(result.gpu_indices)
    assert all(x.free and _eligible(r, x) and x.price == result.price for x in chosen)
    assert result.leftover_free == sum(x.free for x in p.gpus) - r.gpu_count
    # No candidate is strictly better, and it is the brute-force best.
    key = (result.price, -p.reliability_ppm, result.leftover_free, result.provider_id)
    assert all(key <= other for other, _ in candidates)
    assert (key, result.gpu_indices) == min(candidates)
    # The input's order does not matter.
    shuffled = list(providers)
    rng.shuffle(shuffled)
    assert place(r, shuffled) == result


@settings(max_examples=300)
@given(requirements_st, providers_st())
def test_explain_cheapest_and_quote_agree_with_place(
    r: JobRequirements, providers: list[ProviderSlots]
) -> None:
    now = place(r, providers)
    ever = _candidates(r, providers, ever=True)
    no_fit = explain_no_fit(r, providers)
    assert (now is None) == (no_fit is not None)
    assert cheapest_price(r, providers) == (None if now is None else now.price)
    assert cheapest_price(r, providers, include_busy=True) == (min(ever)[0][0] if ever else None)
    if no_fit is not None:
        # "Never" exactly when nothing could fit even with everything free and online.
        assert no_fit.never == (not ever) == (no_fit.code in NEVER_CODES)
        if no_fit.code == "no_capacity":
            assert no_fit.cheapest_price == min(ever)[0][0]
        if no_fit.code == "price_cap_too_low":
            assert r.max_price is not None
            assert no_fit.cheapest_price is not None
            assert no_fit.cheapest_price > r.max_price
            uncapped = JobRequirements(
                gpu_count=r.gpu_count, gpu_model=r.gpu_model, min_vram_gb=r.min_vram_gb
            )
            assert cheapest_price(uncapped, providers, include_busy=True) == no_fit.cheapest_price
    q = quote(r, providers, duration_s=5400, fee_bps=500)
    assert (q is None) == (not ever)
    if q is not None:
        assert q.available_now == (now is not None)
        assert q.placement == now
        assert q.price == (now.price if now is not None else min(ever)[0][0])
        assert q.total == cost(q.price * r.gpu_count, 5_400_000)
        assert q.fee == fee_of(q.total, 500)
        assert q.fee + q.provider_share == q.total
