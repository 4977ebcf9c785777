"""`dante market`, `dante providers`, `dante price suggest` and `dante estimate`."""

from __future__ import annotations

import pytest

from dante.schemas.money import cost, fee_of
from tests.cli.cli import run_dante
from tests.cli.conftest import Market
from tests.factories import gpu
from tests.handlers.harness import Agent

NOWHERE = "nats://127.0.0.1:1"


async def more_providers(market: Market) -> None:
    """carol: four RTX 4090 at 0.7 in Lyon; dave: one A100 80 GB at 2.1 in Oslo."""
    from dante.client.commands import new_command_id
    from dante.schemas import commands as cmd
    from dante.schemas.values import GpuOffer
    from tests.factories import SOLANA

    await Agent(market.nc, "carol", "prov-2").register(4, price=700_000)
    await Agent(market.nc, "dave", "prov-3").client.send(
        cmd.RegisterProvider(
            command_id=new_command_id(),
            provider_id="prov-3",
            name="big",
            location="Oslo, NO",
            payout_address=SOLANA,
            gpus=[gpu(0, "NVIDIA A100-SXM4-80GB", 81920)],
            offers=[GpuOffer(index=0, price=2_100_000)],
        )
    )
    await market.platform.settle()


@pytest.mark.anyio
async def test_market_lists_filters_and_sorts(market: Market) -> None:
    await more_providers(market)
    ran = await market.dante("market", user=None)  # offers are public: no account needed
    assert ran.code == 0, ran
    lines = ran.out.splitlines()
    assert lines[0] == "Offers: online providers; cheapest first."
    assert lines[1].split()[:6] == ["PROVIDER", "NAME", "GPU", "VRAM", "FREE", "dGPU/GPU-H"]
    assert [line.split()[0] for line in lines[2:]] == ["prov-1", "prov-2", "prov-3"]
    assert "2/2" in lines[2] and "0.50" in lines[2]

    ran = await market.dante(
        "market", "--gpu", "RTX 4090", "--gpus", "3", "--max-price", "0.8", "--json"
    )
    assert ran.code == 0, ran
    document = ran.json()
    assert document["filter"] == {
        "gpu_model": "RTX 4090",
        "min_vram_gb": None,
        "gpu_count": 3,
        "max_price_udgpu": 800_000,
        "location": None,
        "sort": "price",
        "include_offline": False,
    }
    (offer,) = document["offers"]
    assert (offer["provider_id"], offer["gpus_free"], offer["price_min_udgpu"]) == (
        "prov-2",
        4,
        700_000,
    )

    ran = await market.dante("providers", "--min-vram-gb", "40", "--location", "oslo")
    assert ran.code == 0, ran
    assert ran.out.splitlines()[0] == (
        "Offers: at least 40 GB of VRAM, location containing 'oslo', online providers; "
        "cheapest first."
    )
    assert [line.split()[0] for line in ran.out.splitlines()[2:]] == ["prov-3"]

    ran = await market.dante("market", "--gpu", "H100")
    assert ran.code == 0 and "No provider offers GPUs like that now." in ran.out


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--gpu", "24GB"], "names no GPU model"),
        (["--gpu", ""], "--gpu needs a GPU model"),
        (["--min-vram-gb", "-1"], "--min-vram-gb must be between 0 and 16384"),
        (["--gpus", "0"], "--gpus must be between 1 and 64"),
        (["--max-price", "cheap"], "--max-price: 'cheap' is not an amount"),
        (["--location", " "], "--location needs some text"),
        (["--sort", "speed"], 'Invalid value "speed" for --sort'),
        (["--colour", "red"], "Unknown option: --colour"),
    ],
)
def test_a_filter_that_cannot_be_honoured_is_an_error(args: list[str], why: str) -> None:
    ran = run_dante("market", *args, url=NOWHERE)
    assert ran.code == 2, ran
    assert ran.err.startswith("error: ") and why in ran.err, ran
    assert len(ran.err.strip().splitlines()) == 1


def test_price_suggest_works_offline() -> None:
    ran = run_dante(
        "price",
        "suggest",
        "--gpu",
        "NVIDIA GeForce RTX 4090",
        "--vram-gb",
        "24",
        "--power-w",
        "450",
        "--json",
        url=NOWHERE,
    )
    assert ran.code == 0, ran
    assert ran.json() == {
        "model": "NVIDIA GeForce RTX 4090",
        "rule": "RTX 4090",
        "base_udgpu": 500_000,
        "vram_gb": 24,
        "vram_udgpu": 480_000,
        "power_w": 450,
        "power_udgpu": 450,
        "price_udgpu": 980_450,
    }
    ran = run_dante("price", "suggest", "--gpu", "Mystery GPU", url=NOWHERE)
    assert ran.code == 0, ran
    assert ran.out.splitlines()[0] == "Suggested price for Mystery GPU: 0.25 dGPU per GPU-hour"
    assert "no rule matches" in ran.out
    ran = run_dante("price", "suggest", "--gpu", "A100", "--vram-gb", "-2", url=NOWHERE)
    assert ran.code == 2 and "--vram-gb" in ran.err


@pytest.mark.anyio
async def test_estimate_quotes_with_the_fee_split(market: Market) -> None:
    await more_providers(market)
    ran = await market.dante("estimate", "--gpus", "2", "--hours", "1.5", "--json")
    assert ran.code == 0, ran
    quote = ran.json()
    total = cost(2 * 500_000, 5_400_000)
    assert quote == {
        "available_now": True,
        "provider_id": "prov-1",
        "gpu_count": 2,
        "gpu_indices": [0, 1],
        "price_udgpu": 500_000,
        "price_per_hour_udgpu": 1_000_000,
        "duration_s": 5400,
        "total_udgpu": total,
        "fee_bps": 500,
        "fee_udgpu": fee_of(total, 500),
        "provider_share_udgpu": total - fee_of(total, 500),
        "stop_grace_s": 10,
    }
    ran = await market.dante("estimate", "--gpus", "3", "--gpu", "RTX 4090")
    assert ran.code == 0, ran
    assert "3 GPU(s) on prov-2, free now" in ran.out
    assert "total                2.10 dGPU" in ran.out
    assert "  platform fee (5%)  0.105 dGPU" in ran.out
    assert "if cancelled         up to the cancel, plus at most 10 s" in ran.out
    assert "provider lost        that attempt is free; the job starts again" in ran.out

    ran = await market.dante("estimate", "--gpus", "2", "--gpu", "A100", "--json")
    assert ran.code == 1, ran
    assert ran.json()["error"]["code"] == "no_matching_offer"
    ran = await market.dante("estimate", "--gpus", "1", "--gpu", "A100", "--max-price", "1")
    assert ran.code == 1, ran
    assert ran.err.startswith("error: ") and "raise --max-price" in ran.err

    for bad in ("0", "-1", "soon", "0.0000001"):
        ran = await market.dante("estimate", "--gpus", "1", "--hours", bad)
        assert ran.code == 2 and "--hours" in ran.err, ran
    ran = await market.dante("estimate")
    assert ran.code == 2 and "--gpus" in ran.err
