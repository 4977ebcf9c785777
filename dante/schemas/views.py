"""What the read queries return: frozen Structs, ready to send as replies.

Amounts are integer µdGPU in fields ending `_udgpu`; prices are µdGPU per GPU-hour; shares
are integer parts per million in fields ending `_ppm`; times are UTC datetimes.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from dante.schemas.values import FileRef, JobRequirements


class Result(msgspec.Struct, frozen=True, kw_only=True):
    pass


class OfferRow(Result, frozen=True, kw_only=True):
    """One provider's GPUs that match a search, summed up."""

    provider_id: str
    name: str
    owner: str
    location: str
    status: str
    #: The matching GPUs' models (usually one), sorted.
    models: list[str]
    #: The smallest VRAM among the matching GPUs, in GB.
    vram_gb: int
    #: Matching GPUs free now (provider online, offered, available, not reserved).
    gpus_free: int
    #: Matching GPUs the provider offers as available, free or busy.
    gpus_total: int
    #: The cheapest and dearest matching GPU, per GPU-hour.
    price_min_udgpu: int
    price_max_udgpu: int
    reliability_ppm: int
    jobs_completed: int
    jobs_lost: int
    uptime_ppm: int
    #: True when any matching GPU is simulated (a machine with no real GPU, for trying Dante).
    simulated: bool


class GpuView(Result, frozen=True, kw_only=True):
    index: int
    uuid: str
    vendor: str
    model: str
    vram_mb: int
    vram_gb: int
    simulated: bool
    offered: bool
    available: bool
    price_udgpu: int
    busy_job_id: str | None
    busy_attempt: int | None
    healthy: bool
    free: bool


class ProviderView(Result, frozen=True, kw_only=True):
    provider_id: str
    owner: str
    name: str
    location: str
    payout_address: str
    host: str
    agent_version: str
    status: str
    status_reason: str
    first_registered_at: datetime | None
    registered_at: datetime | None
    last_seen: datetime | None
    online_since: datetime | None
    online_ms: int
    uptime_ppm: int
    jobs_completed: int
    jobs_lost: int
    reliability_ppm: int
    gpus: list[GpuView]


class Hold(Result, frozen=True, kw_only=True):
    job_id: str
    attempt: int
    held_udgpu: int


class FundsWarning(Result, frozen=True, kw_only=True):
    """A job attempt whose hold could not be renewed: it stops at `stop_at` unless funded."""

    seq: int
    job_id: str
    attempt: int
    needed_udgpu: int
    available_udgpu: int
    stop_at: datetime
    at: datetime
    #: "daily" or "monthly" when the renter's budget is what is short, not its balance.
    budget: str = ""


class Balance(Result, frozen=True, kw_only=True):
    """A wallet's money; an unknown wallet has a zero balance."""

    wallet_id: str
    role: str
    available_udgpu: int = 0
    held_udgpu: int = 0
    #: available + held: what the wallet holds, spendable or not.
    total_udgpu: int = 0
    pending_withdrawal_udgpu: int = 0
    deposited_udgpu: int = 0
    withdrawn_udgpu: int = 0
    charged_udgpu: int = 0
    earned_udgpu: int = 0
    warnings_total: int = 0
    #: Open low-funds warnings (gone once funds are held again or the attempt ends).
    warnings: list[FundsWarning] = msgspec.field(default_factory=list)
    holds: list[Hold] = msgspec.field(default_factory=list)
    #: The renter's spending caps (None: none) and what today (UTC) and this month have
    #: been charged, less refunds; open holds count against a cap too.
    budget_daily_udgpu: int | None = None
    budget_monthly_udgpu: int | None = None
    spent_today_udgpu: int = 0
    spent_this_month_udgpu: int = 0


class LedgerEntry(Result, frozen=True, kw_only=True):
    """One money movement of one wallet, with its effect on available and held funds."""

    seq: int
    wallet_id: str
    #: deposit, hold, charge, credit, fee, release, withdrawal_requested, withdrawal or
    #: withdrawal_failed.
    kind: str
    amount_udgpu: int
    available_delta_udgpu: int
    held_delta_udgpu: int
    job_id: str | None
    attempt: int | None
    reference: str
    at: datetime
    #: The chain transaction of a deposit or a payout.
    signature: str | None = None


class JobView(Result, frozen=True, kw_only=True):
    job_id: str
    renter: str
    name: str
    state: str
    submitted_seq: int
    submitted_at: datetime | None
    requirements: JobRequirements
    payload_kind: str
    image: str | None
    interpreter: str | None
    queue_code: str | None
    queue_reason: str
    attempts: int
    provider_id: str | None
    provider_owner: str | None
    gpu_indices: list[int]
    #: Per GPU-hour, fixed for the current attempt.
    price_udgpu: int | None
    fee_bps: int | None
    assigned_at: datetime | None
    accepted: bool
    started_at: datetime | None
    attempt_started_at: datetime | None
    finished_at: datetime | None
    gpu_ms: int
    attempt_gpu_ms: int
    last_tick_seq: int
    charged_udgpu: int
    cancel_requested: bool
    end_code: str | None
    end_reason: str
    exit_code: int | None
    results: FileRef | None
    updated_seq: int
    #: Placed on a provider whose GPUs are simulated: its telemetry is made up, not measured.
    simulated: bool = False


class PlatformSummary(Result, frozen=True, kw_only=True):
    """For `dante status`: providers by status, GPUs free and busy, jobs by state."""

    position: int
    providers: dict[str, int]
    gpus_total: int
    gpus_free: int
    gpus_busy: int
    jobs: dict[str, int]
    wallets: int
