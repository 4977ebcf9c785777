"""Where a job would run and what it would cost: the quote the platform answers."""

from __future__ import annotations

import msgspec


class Placement(msgspec.Struct, frozen=True, kw_only=True):
    """Where a job runs: GPUs of one provider, at one price per GPU-hour."""

    provider_id: str
    owner: str
    #: Sorted, ascending.
    gpu_indices: tuple[int, ...]
    #: µdGPU per GPU-hour, the same for every chosen GPU.
    price: int
    #: Free GPUs (of any kind) the provider has left after this placement.
    leftover_free: int


class Quote(msgspec.Struct, frozen=True, kw_only=True):
    """What a job would cost, all amounts in µdGPU."""

    #: True: `placement` is where it would run now. False: nothing fits now; the price is
    #: the cheapest at which it could run once capacity frees up.
    available_now: bool
    placement: Placement | None
    provider_id: str
    gpu_count: int
    #: Per GPU-hour.
    price: int
    #: For all the job's GPUs together.
    price_per_hour: int
    duration_s: int
    total: int
    fee_bps: int
    #: The platform's share of `total`; `provider_share` is the rest, exactly.
    fee: int
    provider_share: int
    #: A cancelled job is billed up to the cancel plus at most this many seconds while it
    #: stops. (An attempt lost to its provider is never charged.)
    stop_grace_s: int | None = None
