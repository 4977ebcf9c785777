"""`dante market` (and its shortcut `dante providers`): the GPUs on offer, filtered and sorted.

Every filter is checked before the query is sent: one the platform cannot honour (a model
name with nothing to match, a negative size) is a usage error, never silently dropped, and
the filter in effect is printed above the table.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from cyclopts import Parameter

from dante.cli.options import Json, UsageError
from dante.cli.render import dgpu, emit, rate, table
from dante.cli.session import Session, with_session


class OfferFilter(msgspec.Struct, frozen=True, kw_only=True):
    """What `dante market` asks for; the keys of its `--json` "filter"."""

    gpu_model: str | None = None
    min_vram_gb: int | None = None
    gpu_count: int | None = None
    max_price_udgpu: int | None = None
    location: str | None = None
    sort: Literal["price", "reliability"] = "price"
    include_offline: bool = False

    def describe(self) -> str:
        parts = []
        if self.gpu_model is not None:
            parts.append(f"GPU {self.gpu_model}")
        if self.min_vram_gb is not None:
            parts.append(f"at least {self.min_vram_gb} GB of VRAM")
        if self.gpu_count is not None:
            parts.append(f"at least {self.gpu_count} free GPU(s) on one provider")
        if self.max_price_udgpu is not None:
            parts.append(f"at most {rate(self.max_price_udgpu)}")
        if self.location is not None:
            parts.append(f"location containing {self.location!r}")
        parts.append("online and offline providers" if self.include_offline else "online providers")
        order = "cheapest first" if self.sort == "price" else "most reliable first"
        return f"Offers: {', '.join(parts)}; {order}."


def check_model(model: str, option: str = "--gpu") -> str:
    """A model or family a GPU name can match ("RTX 4090", "H100", "=RTX 4080")."""
    from dante.domain.pricing import ModelPattern

    text = model.strip()
    if not text or len(text) > 100:
        raise UsageError(f"{option} needs a GPU model or family of 1 to 100 characters")
    if not ModelPattern(text).tokens:
        raise UsageError(
            f"{option} {model!r} names no GPU model (a memory size is not a model: use "
            "--min-vram-gb); try a model or family such as 'RTX 4090', 'A100' or 'H100'"
        )
    return text


def check_count(count: int, option: str = "--gpus") -> int:
    if not 1 <= count <= 64:
        raise UsageError(f"{option} must be between 1 and 64, not {count}")
    return count


def check_vram(gb: int, option: str = "--min-vram-gb") -> int:
    if not 0 <= gb <= 16_384:
        raise UsageError(f"{option} must be between 0 and 16384 GB, not {gb}")
    return gb


def parse_price(text: str, option: str = "--max-price") -> int:
    """A price per GPU-hour in dGPU; zero is a valid cap."""
    from dante.schemas.money import MoneyError, parse_dgpu

    try:
        return parse_dgpu(text, allow_zero=True)
    except MoneyError as exc:
        raise UsageError(f"{option}: {exc}") from None


def _percent(ppm: int) -> str:
    return f"{ppm // 10_000}.{ppm % 10_000 // 1_000}%"


async def show_offers(s: Session, wanted: OfferFilter, *, json: bool = False) -> int:
    from dante.schemas.commands import ListOffers

    query = ListOffers(
        gpu_model=wanted.gpu_model,
        min_vram_gb=wanted.min_vram_gb,
        gpu_count=wanted.gpu_count,
        max_price=wanted.max_price_udgpu,
        location=wanted.location,
        sort=wanted.sort,
        include_offline=wanted.include_offline,
    )
    offers = await s.reader().ask(query)
    if json:
        emit({"filter": wanted, "offers": offers})
        return 0
    print(wanted.describe())
    if not offers:
        print("No provider offers GPUs like that now.")
        return 0
    rows = []
    for offer in offers:
        low, high = offer.price_min_udgpu, offer.price_max_udgpu
        price = dgpu(low) if low == high else f"{dgpu(low)}-{dgpu(high)}"
        rows.append(
            (
                offer.provider_id,
                offer.name,
                ", ".join(offer.models) + (" (simulated)" if offer.simulated else ""),
                f"{offer.vram_gb} GB",
                f"{offer.gpus_free}/{offer.gpus_total}",
                price,
                _percent(offer.reliability_ppm),
                _percent(offer.uptime_ppm),
                offer.location or "-",
                "" if offer.status == "online" else offer.status,
            )
        )
    print(
        table(
            (
                "PROVIDER",
                "NAME",
                "GPU",
                "VRAM",
                "FREE",
                "dGPU/GPU-H",
                "RELIABILITY",
                "UPTIME",
                "LOCATION",
                "",
            ),
            rows,
            right=(3, 4, 5, 6, 7),
        )
    )
    return 0


async def market(
    *,
    gpu: Annotated[
        str | None, Parameter(help="A model or family: 'RTX 4090', 'A100', 'RTX'; '=X' exactly.")
    ] = None,
    min_vram_gb: Annotated[int | None, Parameter(help="At least this much VRAM per GPU.")] = None,
    gpus: Annotated[
        int | None, Parameter(help="Only providers with this many matching GPUs free now.")
    ] = None,
    max_price: Annotated[
        str | None, Parameter(help="At most this many dGPU per GPU-hour, e.g. 0.8.")
    ] = None,
    location: Annotated[
        str | None, Parameter(help="Providers whose location contains this text.")
    ] = None,
    sort: Annotated[
        Literal["price", "reliability"], Parameter(help="Cheapest or most reliable first.")
    ] = "price",
    include_offline: Annotated[
        bool, Parameter(negative=(), help="Also list providers that are offline now.")
    ] = False,
    json_output: Json = False,
) -> int:
    """List the GPUs on offer: one row per provider, with price, free GPUs and reliability."""
    if location is not None and not location.strip():
        raise UsageError("--location needs some text to look for")
    wanted = OfferFilter(
        gpu_model=None if gpu is None else check_model(gpu),
        min_vram_gb=None if min_vram_gb is None else check_vram(min_vram_gb),
        gpu_count=None if gpus is None else check_count(gpus),
        max_price_udgpu=None if max_price is None else parse_price(max_price),
        location=None if location is None else location.strip(),
        sort=sort,
        include_offline=include_offline,
    )
    return await with_session(lambda s: show_offers(s, wanted, json=json_output))
