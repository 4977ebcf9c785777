"""Where a job can run: placement, the reason it cannot, its cheapest price and a quote.

Pure functions over a snapshot of providers and their GPUs; no I/O. The scheduler places
jobs with `place`, the command service rejects jobs that can never run (`explain_no_fit`)
and checks funds against `cheapest_price`, and the CLI shows a `quote`.

The rules:

- A job runs on ONE provider, on `gpu_count` of its GPUs that are free and match the
  requested model (or family), minimum VRAM and price cap.
- All GPUs of one placement share ONE price: the provider's eligible GPUs are grouped by
  listed price, and a price class must hold `gpu_count` GPUs by itself. The assignment fixes
  a single price per GPU-hour, so the renter pays exactly what each GPU lists.
- Among candidates: the lowest price, then the most reliable provider, then the least
  fragmentation (fewest free GPUs left on the provider afterwards), then the provider id.
  Within the provider, the lowest GPU indices of the chosen price class.

Every function is one pass over the providers and their GPUs (O(providers * GPUs)); nothing
sorts the whole input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Final, Literal

import msgspec

from dante.domain.pricing import ModelPattern, whole_gb
from dante.schemas.money import BPS_PER_UNIT, cost, fee_of, format_dgpu
from dante.schemas.quotes import Placement, Quote
from dante.schemas.values import JobRequirements

#: What a quote assumes when neither the caller nor the job names a duration.
DEFAULT_QUOTE_S: Final = 3600

NoFitCode = Literal["no_such_gpus", "mixed_prices", "price_cap_too_low", "no_capacity"]
#: Codes that no amount of waiting fixes with the providers registered now.
NEVER_CODES: Final[frozenset[str]] = frozenset(
    {"no_such_gpus", "mixed_prices", "price_cap_too_low"}
)


class GpuSlot(msgspec.Struct, frozen=True, kw_only=True):
    """One GPU of a provider as the scheduler sees it."""

    index: int
    model: str
    vram_mb: int
    #: µdGPU per GPU-hour.
    price: int
    #: Offered (available), healthy, and not reserved by another job.
    free: bool


class ProviderSlots(msgspec.Struct, frozen=True, kw_only=True):
    """A provider and its GPUs as the scheduler sees them."""

    provider_id: str
    owner: str
    online: bool
    #: Jobs completed / (completed + lost), in parts per million (0..1,000,000).
    reliability_ppm: int
    location: str
    gpus: tuple[GpuSlot, ...]


class NoFit(msgspec.Struct, frozen=True, kw_only=True):
    """Why a job cannot be placed now, and whether it ever could be."""

    code: NoFitCode
    reason: str
    #: True: no registered provider could ever run it as asked (reject); False: wait (queue).
    never: bool
    #: The lowest price per GPU-hour that would fit: for "price_cap_too_low" the cheapest
    #: above the cap, for "no_capacity" the cheapest under it; otherwise None.
    cheapest_price: int | None = None


# ── the one pass ──────────────────────────────────────────────────────────────────────────


def _vram_floor_mb(req: JobRequirements) -> int:
    """The least MiB that round (half up, as `Gpu.vram_gb`) to at least `min_vram_gb` GB."""
    # whole_gb(mb) >= g  <=>  (mb + 512) // 1024 >= g  <=>  mb >= 1024 g - 512
    return 0 if not req.min_vram_gb else req.min_vram_gb * 1024 - 512


def _model_filter(req: JobRequirements) -> Callable[[str], bool] | None:
    """A cached model test for this request, or None when any model will do."""
    if req.gpu_model is None:
        return None
    pattern = ModelPattern(req.gpu_model)
    seen: dict[str, bool] = {}

    def matches(model: str) -> bool:
        hit = seen.get(model)
        if hit is None:
            hit = seen[model] = pattern.matches(model)
        return hit

    return matches


#: (price, -reliability, leftover free GPUs, provider id): smaller is better.
_Key = tuple[int, int, int, str]


def _best(  # noqa: C901, PLR0912 (the scheduler's hot loop, kept in one function for speed)
    req: JobRequirements,
    providers: Iterable[ProviderSlots],
    *,
    include_busy: bool,
    floors: Sequence[int] | None = None,
) -> tuple[_Key, ProviderSlots] | None:
    """The best provider and its sort key; include_busy ignores `online` and `free`.

    `floors`, when given, is each provider's cheapest listed GPU price, in ascending order
    (providers sorted by it): the pass stops at the first provider whose cheapest GPU costs
    more than the best placement found or the cap, as none after it can do better.
    """
    need = req.gpu_count
    # A GPU dearer than this cannot be in the best class: the cap, then the best price so far.
    limit = req.max_price
    floor_mb = _vram_floor_mb(req)
    matches = _model_filter(req)
    best_key: _Key | None = None
    best: ProviderSlots | None = None
    for n, provider in enumerate(providers):
        if floors is not None and limit is not None and floors[n] > limit:
            break
        gpus = provider.gpus
        if len(gpus) < need or not (include_busy or provider.online):
            continue
        free = 0
        classes: dict[int, int] = {}
        for gpu in gpus:
            if not (include_busy or gpu.free):
                continue
            free += 1
            price = gpu.price
            if (limit is not None and price > limit) or gpu.vram_mb < floor_mb:
                continue
            if matches is not None and not matches(gpu.model):
                continue
            classes[price] = classes.get(price, 0) + 1
        if free < need:
            continue
        price_found: int | None = None
        for price, count in classes.items():
            if count >= need and (price_found is None or price < price_found):
                price_found = price
        if price_found is None:
            continue
        key = (price_found, -provider.reliability_ppm, free - need, provider.provider_id)
        if best_key is None or key < best_key:
            best_key, best, limit = key, provider, price_found
    if best_key is None or best is None:
        return None
    return best_key, best


def _eligible_indices(
    req: JobRequirements, provider: ProviderSlots, price: int, *, include_busy: bool
) -> tuple[int, ...]:
    """The lowest `gpu_count` indices of the provider's eligible GPUs at exactly `price`."""
    floor_mb = _vram_floor_mb(req)
    pattern = None if req.gpu_model is None else ModelPattern(req.gpu_model)
    indices = sorted(
        gpu.index
        for gpu in provider.gpus
        if (include_busy or gpu.free)
        and gpu.price == price
        and gpu.vram_mb >= floor_mb
        and (pattern is None or pattern.matches(gpu.model))
    )
    return tuple(indices[: req.gpu_count])


def _placement(
    req: JobRequirements, found: tuple[_Key, ProviderSlots], *, include_busy: bool
) -> Placement:
    (price, _, leftover, _), provider = found
    return Placement(
        provider_id=provider.provider_id,
        owner=provider.owner,
        gpu_indices=_eligible_indices(req, provider, price, include_busy=include_busy),
        price=price,
        leftover_free=leftover,
    )


# ── the API ───────────────────────────────────────────────────────────────────────────────


def place(
    req: JobRequirements,
    providers: Iterable[ProviderSlots],
    *,
    floors: Sequence[int] | None = None,
) -> Placement | None:
    """The best placement now, or None when no online provider can take the job now.

    With `floors` (see `_best`), providers come sorted by their cheapest listed price and
    the pass stops early; the answer is the same.
    """
    found = _best(req, providers, include_busy=False, floors=floors)
    return None if found is None else _placement(req, found, include_busy=False)


def cheapest_price(
    req: JobRequirements,
    providers: Iterable[ProviderSlots],
    include_busy: bool = False,
    *,
    floors: Sequence[int] | None = None,
) -> int | None:
    """The lowest uniform price per GPU-hour at which the job could be placed, under its cap.

    include_busy=False: now (online providers, free GPUs), the price `place` would choose.
    include_busy=True: ever, with every registered GPU free and every provider online.
    """
    found = _best(req, providers, include_busy=include_busy, floors=floors)
    return None if found is None else found[0][0]


def quote(
    req: JobRequirements,
    providers: Iterable[ProviderSlots],
    duration_s: int | None,
    fee_bps: int,
    stop_grace_s: int | None = None,
) -> Quote | None:
    """The price of the cheapest placement now, else of the cheapest that could ever fit.

    The duration is `duration_s`, else the job's `max_duration_s`, else an hour. The total
    is `cost(price * gpu_count, duration_ms)` (the billing rounding rule, rounded down once),
    and the platform fee is `fee_of(total, fee_bps)`; the provider gets the rest. None when
    the job could never be placed.
    """
    seconds = duration_s if duration_s is not None else (req.max_duration_s or DEFAULT_QUOTE_S)
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    if not 0 <= fee_bps <= BPS_PER_UNIT:
        raise ValueError(f"fee_bps must be within 0..{BPS_PER_UNIT}")
    snapshot = providers if isinstance(providers, list | tuple) else list(providers)
    now = _best(req, snapshot, include_busy=False)
    placement = None if now is None else _placement(req, now, include_busy=False)
    found = now if now is not None else _best(req, snapshot, include_busy=True)
    if found is None:
        return None
    (price, _, _, provider_id), _provider = found
    per_hour = price * req.gpu_count
    total = cost(per_hour, seconds * 1000)
    fee = fee_of(total, fee_bps)
    return Quote(
        available_now=now is not None,
        placement=placement,
        provider_id=provider_id,
        gpu_count=req.gpu_count,
        price=price,
        price_per_hour=per_hour,
        duration_s=seconds,
        total=total,
        fee_bps=fee_bps,
        fee=fee,
        provider_share=total - fee,
        stop_grace_s=stop_grace_s,
    )


# ── why not ───────────────────────────────────────────────────────────────────────────────


def _describe(req: JobRequirements) -> str:
    what = f"{req.gpu_model!r}" if req.gpu_model is not None else "any"
    text = f"{req.gpu_count} {what} GPU" + ("s" if req.gpu_count > 1 else "")
    if req.min_vram_gb:
        text += f" with at least {req.min_vram_gb} GB of VRAM"
    return text


def _dgpu(amount: int) -> str:
    return f"{format_dgpu(amount)} dGPU"


class _Census:
    """What one pass learns about every registered provider, for explaining a no-fit."""

    __slots__ = (
        "best_model_vram_mb",
        "busy",
        "cheapest_any",
        "cheapest_capped",
        "max_on_one",
        "model_seen",
        "offline",
        "split_example",
    )

    def __init__(self) -> None:
        self.model_seen = False  # some GPU matches the model (any VRAM)
        self.best_model_vram_mb = 0  # the most VRAM among those
        self.max_on_one = 0  # the most model+VRAM matching GPUs on one provider
        self.split_example: str | None = None  # a provider with enough, but at mixed prices
        self.cheapest_any: int | None = None  # cheapest uniform class, ignoring the cap
        self.cheapest_capped: int | None = None  # cheapest uniform class under the cap
        self.offline = 0  # could run it under the cap, but offline
        self.busy = 0  # could run it under the cap, online, but not enough free now

    @classmethod
    def of(cls, req: JobRequirements, providers: Iterable[ProviderSlots]) -> _Census:
        census = cls()
        floor_mb = _vram_floor_mb(req)
        matches = _model_filter(req)
        for provider in providers:
            classes: dict[int, int] = {}
            for gpu in provider.gpus:
                if matches is not None and not matches(gpu.model):
                    continue
                census.model_seen = True
                census.best_model_vram_mb = max(census.best_model_vram_mb, gpu.vram_mb)
                if gpu.vram_mb >= floor_mb:
                    classes[gpu.price] = classes.get(gpu.price, 0) + 1
            census.count(req, provider, classes)
        return census

    def count(self, req: JobRequirements, provider: ProviderSlots, classes: dict[int, int]) -> None:
        """Take in one provider's matching GPUs, counted by price."""
        need = req.gpu_count
        matching = sum(classes.values())
        self.max_on_one = max(self.max_on_one, matching)
        fitting = [price for price, count in classes.items() if count >= need]
        if not fitting:
            if matching >= need and self.split_example is None:
                self.split_example = provider.provider_id
            return
        self.cheapest_any = min(
            fitting + ([] if self.cheapest_any is None else [self.cheapest_any])
        )
        capped = [p for p in fitting if req.max_price is None or p <= req.max_price]
        if not capped:
            return
        if self.cheapest_capped is not None:
            capped.append(self.cheapest_capped)
        self.cheapest_capped = min(capped)
        # Used only when nothing fits now, so an online one lacks free GPUs in every class.
        if provider.online:
            self.busy += 1
        else:
            self.offline += 1


def explain_no_fit(req: JobRequirements, providers: Iterable[ProviderSlots]) -> NoFit | None:
    """Why the job cannot be placed now, with a stable code; None when it can be (see `place`).

    Never (reject the submission), judged over every registered provider, online or not:
    - "no_such_gpus": no provider has `gpu_count` GPUs of the model with the VRAM at all;
    - "mixed_prices": some do, but never `gpu_count` of them at one price;
    - "price_cap_too_low": every such price class is above `max_price`
      (`cheapest_price` is the cheapest that would fit).
    Not now (queue): "no_capacity", they exist under the cap but are offline or busy.
    """
    snapshot = providers if isinstance(providers, list | tuple) else list(providers)
    if _best(req, snapshot, include_busy=False) is not None:
        return None
    c = _Census.of(req, snapshot)
    need = req.gpu_count
    if c.max_on_one < need:
        if not c.model_seen:
            reason = (
                "no registered provider has any GPU"
                if req.gpu_model is None
                else f"no registered provider has a GPU matching {req.gpu_model!r}"
            )
        elif c.max_on_one == 0:  # the model is there, but none has the VRAM
            kind = "GPU" if req.gpu_model is None else f"{req.gpu_model!r} GPU"
            reason = (
                f"no registered {kind} has at least {req.min_vram_gb} GB of VRAM"
                f" (the most is {whole_gb(c.best_model_vram_mb)} GB)"
            )
        else:
            reason = (
                f"no registered provider has {_describe(req)}: the most on one provider is"
                f" {c.max_on_one}, and a job runs on one provider"
            )
        return NoFit(code="no_such_gpus", reason=reason, never=True)
    if c.cheapest_any is None:
        reason = (
            f"provider {c.split_example} has {_describe(req)}, but not {need} of them at one"
            " price; all GPUs of a job run at the same price per GPU-hour"
        )
        return NoFit(code="mixed_prices", reason=reason, never=True)
    if c.cheapest_capped is None:
        assert req.max_price is not None  # without a cap, cheapest_any would be under it
        reason = (
            f"no registered provider offers {_describe(req)} at {_dgpu(req.max_price)} per"
            f" GPU-hour or less; the cheapest is {_dgpu(c.cheapest_any)}"
        )
        return NoFit(
            code="price_cap_too_low", reason=reason, never=True, cheapest_price=c.cheapest_any
        )
    parts = []
    if c.offline:
        parts.append(f"{c.offline} offline")
    if c.busy:
        parts.append(f"{c.busy} busy")
    reason = (
        f"{c.offline + c.busy} provider(s) can run {_describe(req)} from"
        f" {_dgpu(c.cheapest_capped)} per GPU-hour, but none has them free now"
        f" ({', '.join(parts)}); the job waits for capacity"
    )
    return NoFit(code="no_capacity", reason=reason, never=False, cheapest_price=c.cheapest_capped)
