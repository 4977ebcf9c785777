"""`dante price suggest` (what to ask for a GPU) and `dante estimate` (what a job would cost)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Annotated, Any

from cyclopts import App, Parameter

from dante.cli.options import Json, UsageError
from dante.cli.render import dgpu, duration, emit, pairs, rate
from dante.cli.session import Session, with_session

if TYPE_CHECKING:
    from dante.schemas.quotes import Quote
    from dante.schemas.values import JobRequirements

app = App(name="price", help="Prices per GPU-hour: what the reference table suggests.")


def parse_hours(text: str, option: str) -> int:
    """Decimal hours ("2", "0.5") as whole seconds, exactly; at most 30 days."""
    from dante.schemas.values import MAX_DURATION_S

    try:
        hours = Decimal(text.strip())
    except InvalidOperation:
        raise UsageError(f"{option} {text!r} is not a number of hours (like 2 or 0.5)") from None
    seconds = hours * 3600
    if not hours.is_finite() or seconds <= 0 or seconds != seconds.to_integral_value():
        raise UsageError(f"{option} {text!r} must be a positive number of hours in whole seconds")
    if seconds > MAX_DURATION_S:
        raise UsageError(f"{option} {text!r} is more than {MAX_DURATION_S // 3600} hours")
    return int(seconds)


def requirements(
    *,
    gpus: int,
    gpu: str | None,
    min_vram_gb: int | None,
    max_price: str | None,
    max_hours: str | None = None,
) -> JobRequirements:
    """A job's requirements from command-line options, each checked (usage errors)."""
    from dante.cli.market import check_count, check_model, check_vram, parse_price
    from dante.schemas.values import JobRequirements

    return JobRequirements(
        gpu_count=check_count(gpus),
        gpu_model=None if gpu is None else check_model(gpu),
        min_vram_gb=None if min_vram_gb is None else check_vram(min_vram_gb),
        max_price=None if max_price is None else parse_price(max_price),
        max_duration_s=None if max_hours is None else parse_hours(max_hours, "--max-hours"),
    )


def quote_document(quote: Quote) -> dict[str, Any]:
    """A quote with its amounts in keys ending in _udgpu."""
    return {
        "available_now": quote.available_now,
        "provider_id": quote.provider_id,
        "gpu_count": quote.gpu_count,
        "gpu_indices": None if quote.placement is None else list(quote.placement.gpu_indices),
        "price_udgpu": quote.price,
        "price_per_hour_udgpu": quote.price_per_hour,
        "duration_s": quote.duration_s,
        "total_udgpu": quote.total,
        "fee_bps": quote.fee_bps,
        "fee_udgpu": quote.fee,
        "provider_share_udgpu": quote.provider_share,
        "stop_grace_s": quote.stop_grace_s,
    }


def quote_lines(quote: Quote, extra: list[tuple[str, str]] | None = None) -> str:
    where = (
        f"on {quote.provider_id}, free now"
        if quote.available_now
        else f"on {quote.provider_id} once its GPUs are free (none match free now)"
    )
    fee_pct = f"{quote.fee_bps // 100}.{quote.fee_bps % 100:02d}".rstrip("0").rstrip(".")
    return pairs(
        [
            ("where", f"{quote.gpu_count} GPU(s) {where}"),
            ("price", f"{rate(quote.price)} ({dgpu(quote.price_per_hour)} dGPU per hour)"),
            ("for", duration(quote.duration_s)),
            ("total", f"{dgpu(quote.total)} dGPU"),
            ("  to provider", f"{dgpu(quote.provider_share)} dGPU"),
            (f"  platform fee ({fee_pct}%)", f"{dgpu(quote.fee)} dGPU"),
            *(extra or []),
            *(
                [
                    ("billed", "for the GPU time used, rounded down once per attempt"),
                    ("if cancelled", f"up to the cancel, plus at most {quote.stop_grace_s} s"),
                    ("provider lost", "that attempt is free; the job starts again"),
                ]
                if quote.stop_grace_s is not None
                else []
            ),
        ]
    )


async def get_quote(s: Session, req: JobRequirements, duration_s: int | None) -> Quote:
    from dante.schemas.commands import QuoteJob

    return await s.reader().ask(QuoteJob(requirements=req, duration_s=duration_s))


async def show_estimate(
    s: Session, req: JobRequirements, duration_s: int | None, *, json: bool = False
) -> int:
    quote = await get_quote(s, req, duration_s)
    if json:
        emit(quote_document(quote))
    else:
        print(quote_lines(quote))
    return 0


async def estimate(
    *,
    gpus: Annotated[int, Parameter(help="How many GPUs, all on one provider.")],
    gpu: Annotated[str | None, Parameter(help="A model or family: 'RTX 4090', 'A100'.")] = None,
    min_vram_gb: Annotated[int | None, Parameter(help="At least this much VRAM per GPU.")] = None,
    hours: Annotated[
        str | None, Parameter(help="How long, in hours (2, 0.5). Default: one hour.")
    ] = None,
    max_price: Annotated[str | None, Parameter(help="At most this many dGPU per GPU-hour.")] = None,
    json_output: Json = False,
) -> int:
    """Quote a job from the current offers: where it would run, the total, and the fee split."""
    req = requirements(gpus=gpus, gpu=gpu, min_vram_gb=min_vram_gb, max_price=max_price)
    seconds = None if hours is None else parse_hours(hours, "--hours")
    return await with_session(lambda s: show_estimate(s, req, seconds, json=json_output))


@app.command
def suggest(
    *,
    gpu: Annotated[str, Parameter(help="The GPU's model, e.g. 'NVIDIA GeForce RTX 4090'.")],
    vram_gb: Annotated[int | None, Parameter(help="Its VRAM in GB.")] = None,
    power_w: Annotated[int | None, Parameter(help="Its power draw in watts.")] = None,
    json_output: Json = False,
) -> int:
    """Suggest a price per GPU-hour: the model's base + 0.02 dGPU per GB + 0.001 per kW.

    Works offline: the reference table is part of Dante. A model no rule matches gets the
    default base of 0.25 dGPU.
    """
    from dante.domain.pricing import suggest_price

    if not gpu.strip() or len(gpu) > 100:
        raise UsageError("--gpu needs the GPU's model name (1 to 100 characters)")
    if vram_gb is not None and not 0 <= vram_gb <= 16_384:
        raise UsageError(f"--vram-gb must be between 0 and 16384, not {vram_gb}")
    if power_w is not None and not 0 <= power_w <= 100_000:
        raise UsageError(f"--power-w must be between 0 and 100000, not {power_w}")
    found = suggest_price(gpu.strip(), vram_gb, power_w)
    if json_output:
        emit(
            {
                "model": found.model,
                "rule": found.rule,
                "base_udgpu": found.base,
                "vram_gb": found.vram_gb,
                "vram_udgpu": found.vram_part,
                "power_w": found.power_w,
                "power_udgpu": found.power_part,
                "price_udgpu": found.total,
            }
        )
        return 0
    rule = f"the {found.rule} rule" if found.rule else "no rule matches: the default base"
    print(f"Suggested price for {found.model}: {dgpu(found.total)} dGPU per GPU-hour")
    print(
        pairs(
            [
                ("  base", f"{dgpu(found.base)} ({rule})"),
                ("  VRAM", f"{dgpu(found.vram_part)} ({found.vram_gb} GB x 0.02)"),
                ("  power", f"{dgpu(found.power_part)} ({found.power_w} W x 0.000001)"),
            ]
        )
    )
    return 0
