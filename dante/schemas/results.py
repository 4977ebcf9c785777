"""What successful commands answer with (queries answer with the projections' views)."""

from __future__ import annotations

from typing import Literal

import msgspec

from dante.schemas.values import FileRef, Timestamp


class WalletResult(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    wallet_id: str
    available_udgpu: int
    held_udgpu: int
    total_udgpu: int
    pending_withdrawal_udgpu: int = 0
    withdrawal_id: str | None = None


class BudgetResult(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """A renter's spending caps and what the current UTC day and month have used of them."""

    wallet_id: str
    daily_udgpu: int | None
    monthly_udgpu: int | None
    #: Charged (less refunds) today and this month; open holds count against a cap too.
    spent_today_udgpu: int
    spent_this_month_udgpu: int
    held_udgpu: int
    #: What may still be held now (the balance, or less where a cap is nearer).
    spendable_udgpu: int


class SubmitResult(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    job_id: str
    state: str
    #: The price per GPU-hour of the offer the job is placed on now; when nothing matching is
    #: free now (`available_now` false), the cheapest it could ever get.
    price_udgpu: int
    #: The first hold at that price: exactly the `FundsHeld` placement takes when available
    #: now, otherwise the least it will be.
    first_hold_udgpu: int
    available_now: bool
    #: "daily" or "monthly" when that budget leaves less than the first hold now: the job is
    #: accepted but nothing is held until `budget_room_at` (the period's end), or until the
    #: budget is raised.
    waits_for_budget: str = ""
    budget_room_at: Timestamp | None = None


class JobResult(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    job_id: str
    state: str
    attempt: int = 0
    #: Usage ticks newly recorded by this command (RecordUsage); retries record none.
    recorded_ticks: int = 0
    #: A cancel of a running attempt: it is billed up to the cancel plus at most this many
    #: seconds while it stops (the attempt's stop grace); None when nothing more is billed.
    stop_grace_s: int | None = None


class ProviderResult(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    provider_id: str
    status: str


class OutputResult(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """After `RecordOutput`: the lines stored (once, even when a batch is sent again)."""

    stored: int


class LogLine(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    at: Timestamp
    stream: Literal["stdout", "stderr"]
    text: str
    attempt: int


class LogPage(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    job_id: str
    lines: list[LogLine]
    #: Pass as `after` to get the next page. An opaque position (the stream sequence of a
    #: batch of lines times 4096, plus how many of its lines were already returned).
    next: int
    #: The job has ended: once a page comes back empty, there will be no more lines.
    ended: bool


class ChunkResult(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """A piece of a stored file; `done` on the last piece."""

    object: str
    offset: int
    data: bytes
    size: int
    sha256: str
    done: bool


class UploadResult(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """After a chunk: how much is stored; after the final chunk, the stored file."""

    received: int
    file: FileRef | None = None
