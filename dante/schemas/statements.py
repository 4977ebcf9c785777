"""A job's statement, as the platform answers it: every event of the job's life, its
usage, charges and fee, and the digest both sides compare (built by
`dante.projections.statement`)."""

from __future__ import annotations

from datetime import datetime

import msgspec

from dante.schemas.values import GpuSample


class StatementEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One event of the job's life, and the digest of the chain up to it."""

    seq: int
    at: datetime
    type: str
    subject: str
    attempt: int | None
    summary: str
    payload_sha256: str
    chain: str


class UsageLine(msgspec.Struct, frozen=True, kw_only=True):
    """One usage tick: its GPU time and what each GPU measured."""

    seq: int
    tick: int
    ended_at: datetime
    gpu_ms: int
    samples: list[GpuSample]


class ChargeLine(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    at: datetime
    usage_seq: int
    total_gpu_ms: int
    amount_udgpu: int
    uncovered_udgpu: int
    fee_udgpu: int
    provider_credit_udgpu: int
    provider_wallet: str


class AttemptStatement(msgspec.Struct, frozen=True, kw_only=True):
    attempt: int
    provider_id: str
    provider_owner: str
    gpu_indices: list[int]
    price_udgpu: int
    fee_bps: int
    assigned_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    #: How the attempt ended: completed, failed, cancelled, stopped, requeued ("" running).
    ended: str
    gpu_ms: int
    usage: list[UsageLine]
    charges: list[ChargeLine]
    held_udgpu: int
    charged_udgpu: int
    uncovered_udgpu: int
    fee_udgpu: int
    provider_credit_udgpu: int
    released_udgpu: int
    #: Still held for the attempt (0 once it is settled).
    hold_udgpu: int
    #: Given back because the attempt was lost to its provider (all it was charged).
    refunded_udgpu: int = 0
    #: It ran on simulated GPUs: its telemetry was made up by the agent, not measured.
    simulated: bool = False


class JobStatement(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str
    renter: str
    name: str
    state: str
    submitted_at: datetime | None
    ended_at: datetime | None
    attempts: list[AttemptStatement]
    events: list[StatementEntry]
    gpu_ms: int
    charged_udgpu: int
    uncovered_udgpu: int
    fee_udgpu: int
    provider_credit_udgpu: int
    held_udgpu: int
    released_udgpu: int
    #: The last sequence the statement covers.
    position: int
    digest: str
    #: Given back for attempts lost to their providers; the renter paid charged - refunded.
    refunded_udgpu: int = 0


# ── the digest ──────────────────────────────────────────────────────────────────────────
