"""Time place() and friends over many synthetic providers.

    .venv/bin/python -m bench.placement [--providers 10000] [--repeat 20] [--seed 1]

The baseline is the least any placement must do: one pass that looks at every GPU of every
online provider (counting the free ones). Each row reports the median time per call and its
ratio to that baseline, measured in the same run.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable, Sequence
from functools import partial

from dante.domain.placement import (
    GpuSlot,
    ProviderSlots,
    cheapest_price,
    explain_no_fit,
    place,
    quote,
)
from dante.domain.pricing import suggest_price
from dante.schemas.values import JobRequirements

# (model name as detected, VRAM in MiB, power limit in W)
FLEET = [
    ("NVIDIA GeForce RTX 4090", 24_564, 450),
    ("NVIDIA GeForce RTX 4080 SUPER", 16_376, 320),
    ("NVIDIA GeForce RTX 3090", 24_576, 350),
    ("NVIDIA GeForce RTX 3080", 10_240, 320),
    ("NVIDIA A100-SXM4-80GB", 81_920, 400),
    ("NVIDIA H100 80GB HBM3", 81_559, 700),
    ("NVIDIA H100 PCIe", 81_559, 350),
    ("Tesla V100-SXM2-16GB", 16_384, 300),
    ("NVIDIA L40S", 46_068, 350),
    ("AMD Instinct MI250X", 65_536, 500),
    ("Radeon RX 7900 XTX", 24_560, 355),
    ("Apple M2 Ultra", 196_608, 0),
    ("Intel(R) Arc(TM) A770 Graphics", 16_384, 225),
]


def synthetic(count: int, seed: int) -> list[ProviderSlots]:
    """Providers of one model each (1 to 8 GPUs), mostly one price, some busy or offline."""
    rng = random.Random(seed)
    providers = []
    for n in range(count):
        model, vram_mb, power_w = rng.choice(FLEET)
        price = suggest_price(model, (vram_mb + 512) // 1024, power_w).total
        price = price // 10_000 * 10_000 + rng.choice([0, 0, 0, 10_000, -10_000])
        gpus = tuple(
            GpuSlot(
                index=i,
                model=model,
                vram_mb=vram_mb,
                price=price if rng.random() < 0.9 else price + 50_000,
                free=rng.random() < 0.6,
            )
            for i in range(rng.randint(1, 8))
        )
        providers.append(
            ProviderSlots(
                provider_id=f"prv-{n:05d}",
                owner=f"owner{n % 997}",
                online=rng.random() < 0.9,
                reliability_ppm=rng.randint(800_000, 1_000_000),
                location=rng.choice(["eu", "us", "ap"]),
                gpus=gpus,
            )
        )
    return providers


def _median_s(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm caches (model matching is memoised per name)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--providers", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    providers = synthetic(args.providers, args.seed)
    gpu_total = sum(len(p.gpus) for p in providers)

    def baseline() -> int:
        return sum(1 for p in providers if p.online for x in p.gpus if x.free)

    jobs = {
        "any 1 GPU": JobRequirements(),
        "RTX 4090, <= 1.0": JobRequirements(gpu_model="RTX 4090", max_price=1_000_000),
        "8 x H100, >= 80 GB": JobRequirements(gpu_count=8, gpu_model="H100", min_vram_gb=80),
        "4 x RTX, >= 24 GB": JobRequirements(gpu_count=4, gpu_model="RTX", min_vram_gb=24),
        "H200 (none exist)": JobRequirements(gpu_model="H200"),
    }
    rows: list[tuple[str, float]] = [
        ("baseline: count free GPUs", _median_s(baseline, args.repeat))
    ]
    for name, job in jobs.items():
        rows.append((f"place: {name}", _median_s(partial(place, job, providers), args.repeat)))
    busy = JobRequirements(gpu_count=8, gpu_model="RTX 4090", max_price=600_000)
    rows.append(
        (
            "cheapest_price(include_busy)",
            _median_s(lambda: cheapest_price(busy, providers, include_busy=True), args.repeat),
        )
    )
    rows.append(
        (
            "explain_no_fit: 8 x RTX 4090",
            _median_s(lambda: explain_no_fit(busy, providers), args.repeat),
        )
    )
    rows.append(
        ("quote: 8 x RTX 4090", _median_s(lambda: quote(busy, providers, 3600, 500), args.repeat))
    )

    base = rows[0][1]
    print(f"{args.providers} providers, {gpu_total} GPUs, median of {args.repeat} runs")
    print(f"{'operation':<34} {'ms/call':>9} {'x baseline':>11}")
    for name, seconds in rows:
        print(f"{name:<34} {seconds * 1000:>9.2f} {seconds / base:>11.1f}")


if __name__ == "__main__":
    main()
