"""Every domain event, as frozen keyword-only Structs in one tagged union per aggregate.

An event is a fact in the past tense. Its `event_id` equals the `Nats-Msg-Id` it was appended
with, which is derived from its cause, so a retried decision can never append it twice.
Schemas change only by adding fields with defaults; anything else bumps `v` and registers an
upcaster in `dante.events.upcasting`.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import msgspec

from dante.schemas.money import Bps, Money, PositiveMoney, Rate
from dante.schemas.values import (
    Account,
    Attempt,
    FileRef,
    Gpu,
    GpuIndex,
    GpuOffer,
    Id,
    JobPayload,
    JobRequirements,
    Reason,
    Signature,
    SolanaAddress,
    Text,
    Timestamp,
    UsageTick,
    WalletId,
)

EventId = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
#: What made this happen: "cmd:<command id>", "seq:<stream sequence>" or "timer:<name>".
Cause = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class Event(msgspec.Struct, frozen=True, gc=False, kw_only=True, tag=True, tag_field="type"):
    """The envelope every event shares."""

    AGGREGATE: ClassVar[str] = ""

    event_id: EventId
    at: Timestamp
    cause: Cause
    v: int = 1

    @property
    def aggregate_id(self) -> str:
        raise NotImplementedError


# ── provider ────────────────────────────────────────────────────────────────────────────


class ProviderEvent(Event, frozen=True, kw_only=True):
    AGGREGATE: ClassVar[str] = "provider"
    provider_id: Id

    @property
    def aggregate_id(self) -> str:
        return self.provider_id


class ProviderRegistered(ProviderEvent, frozen=True, kw_only=True):
    """A provider machine joined (or re-joined with a fresh description of its GPUs)."""

    owner: Account
    name: Text
    location: Text = ""
    payout_address: SolanaAddress
    gpus: list[Gpu]
    offers: list[GpuOffer]
    host: Text = ""
    agent_version: Text = ""


class OfferUpdated(ProviderEvent, frozen=True, kw_only=True):
    """New prices or availability for some of a provider's GPUs."""

    offers: list[GpuOffer]


class ProviderWentOffline(ProviderEvent, frozen=True, kw_only=True):
    last_seen: Timestamp | None = None
    reason: Reason = ""


class ProviderCameOnline(ProviderEvent, frozen=True, kw_only=True):
    pass


class ProviderDeregistered(ProviderEvent, frozen=True, kw_only=True):
    reason: Reason = ""


class GpusReserved(ProviderEvent, frozen=True, kw_only=True):
    """GPUs of this provider were allocated to a job attempt (the capacity contention point)."""

    job_id: Id
    attempt: Attempt
    gpu_indices: list[GpuIndex]


class GpusReleased(ProviderEvent, frozen=True, kw_only=True):
    job_id: Id
    attempt: Attempt
    gpu_indices: list[GpuIndex]
    reason: Reason = ""


# ── job ─────────────────────────────────────────────────────────────────────────────────


class JobEvent(Event, frozen=True, kw_only=True):
    AGGREGATE: ClassVar[str] = "job"
    job_id: Id

    @property
    def aggregate_id(self) -> str:
        return self.job_id


class JobSubmitted(JobEvent, frozen=True, kw_only=True):
    renter: Account
    name: Text = ""
    requirements: JobRequirements
    payload: JobPayload
    inputs: list[FileRef] = msgspec.field(default_factory=list)


QueueReason = Literal[
    "no_capacity", "insufficient_funds", "provider_lost", "declined", "budget_reached"
]


class JobQueued(JobEvent, frozen=True, kw_only=True):
    """The job waits for capacity (or for funds); `reason` says which, for its status."""

    code: QueueReason = "no_capacity"
    reason: Reason = ""


class JobAssigned(JobEvent, frozen=True, kw_only=True):
    """The job's attempt was placed on GPUs of one provider, at a price fixed for the attempt."""

    attempt: Attempt
    provider_id: Id
    provider_owner: Account
    gpu_indices: list[GpuIndex]
    #: The provider's listed price per GPU-hour when placed; the renter pays exactly this.
    price: Rate
    fee_bps: Bps
    #: The first hold made for this attempt.
    hold: Money
    #: After a cancel is asked, the attempt is billed for at most this many seconds more
    #: while it stops (fixed for the attempt like the fee); None (older attempts): no limit.
    stop_grace_s: Annotated[int, msgspec.Meta(ge=0, le=86_400)] | None = None


class JobAccepted(JobEvent, frozen=True, kw_only=True):
    attempt: Attempt


class JobDeclined(JobEvent, frozen=True, kw_only=True):
    attempt: Attempt
    reason: Reason = ""


class JobStarted(JobEvent, frozen=True, kw_only=True):
    attempt: Attempt


class UsageRecorded(JobEvent, frozen=True, kw_only=True):
    """A batch of metering ticks reported by the agent for one attempt."""

    attempt: Attempt
    ticks: Annotated[list[UsageTick], msgspec.Meta(min_length=1)]

    @property
    def gpu_ms(self) -> int:
        return sum(t.gpu_ms for t in self.ticks)


class JobCompleted(JobEvent, frozen=True, kw_only=True):
    attempt: Attempt
    exit_code: int = 0
    results: FileRef | None = None


class JobFailed(JobEvent, frozen=True, kw_only=True):
    attempt: Attempt | None = None
    reason: Reason
    exit_code: int | None = None
    results: FileRef | None = None
    #: The last attempt was lost to the provider (gave up after too many lost attempts):
    #: like a requeued attempt, it is not charged.
    lost: bool = False


class JobCancelRequested(JobEvent, frozen=True, kw_only=True):
    by: Account
    reason: Reason = ""


class JobCancelled(JobEvent, frozen=True, kw_only=True):
    attempt: Attempt | None = None
    reason: Reason = ""
    results: FileRef | None = None


StopCode = Literal[
    "insufficient_funds", "max_duration", "provider_timeout", "operator", "budget_reached"
]


class JobStopped(JobEvent, frozen=True, kw_only=True):
    """The platform ended the job (funds ran out, time limit, ...); the agent still uploads."""

    attempt: Attempt | None = None
    code: StopCode
    reason: Reason = ""


class JobResultsStored(JobEvent, frozen=True, kw_only=True):
    """Results that arrived after the job had already ended (after a stop or a cancel)."""

    attempt: Attempt
    results: FileRef
    exit_code: int | None = None


class JobRequeued(JobEvent, frozen=True, kw_only=True):
    """The attempt was lost (declined, not started in time, provider offline); try again."""

    attempt: Attempt
    next_attempt: Attempt
    provider_id: Id
    reason: Reason = ""


# ── wallet ──────────────────────────────────────────────────────────────────────────────


class WalletEvent(Event, frozen=True, kw_only=True):
    AGGREGATE: ClassVar[str] = "wallet"
    wallet_id: WalletId

    @property
    def aggregate_id(self) -> str:
        return self.wallet_id


class AccountOpened(WalletEvent, frozen=True, kw_only=True):
    """An account (and its wallet) exists; its secret never enters the log."""

    role: Literal["renter", "provider"]


class FundsDeposited(WalletEvent, frozen=True, kw_only=True):
    amount: PositiveMoney
    reference: Text = ""
    #: The chain transaction that paid for it (always appended with its `PaymentCredited`).
    signature: Signature | None = None


class FundsHeld(WalletEvent, frozen=True, kw_only=True):
    """Available funds set aside for a job attempt."""

    job_id: Id
    attempt: Attempt
    amount: PositiveMoney


class FundsCharged(WalletEvent, frozen=True, kw_only=True):
    """The renter paid for usage, out of the attempt's hold.

    Always appended atomically with the matching `ProviderCredited` and `FeeCollected`, so
    money is conserved at every committed position of the log.
    """

    job_id: Id
    attempt: Attempt
    amount: Money
    #: Stream sequence of the `UsageRecorded` this charge is for.
    usage_seq: int
    #: The attempt's GPU time after this usage, and its price: the charge is derived from them.
    total_gpu_ms: Annotated[int, msgspec.Meta(ge=0)]
    price: Rate
    fee_bps: Bps
    provider_wallet: WalletId
    #: The part of this usage's cost the hold could not cover (funds ran out during the
    #: grace period); it is not charged. `amount + uncovered` is always exactly the cost.
    uncovered: Money = 0
    #: The part of `total_gpu_ms` that is billable: less when the attempt ran on past a
    #: cancel by more than its stop grace (`JobAssigned.stop_grace_s`). The cost is
    #: `cost(price, billable)` of the running total; None (older charges): all of it.
    billable_gpu_ms: Annotated[int, msgspec.Meta(ge=0)] | None = None


class ProviderCredited(WalletEvent, frozen=True, kw_only=True):
    job_id: Id
    attempt: Attempt
    amount: Money
    charge_id: EventId


class FeeCollected(WalletEvent, frozen=True, kw_only=True):
    job_id: Id
    attempt: Attempt
    amount: Money
    charge_id: EventId


class HoldReleased(WalletEvent, frozen=True, kw_only=True):
    job_id: Id
    attempt: Attempt
    amount: Money
    reason: Reason = ""


class LowFundsWarned(WalletEvent, frozen=True, kw_only=True):
    job_id: Id
    attempt: Attempt
    needed: Money
    available: Money
    stop_at: Timestamp
    #: "daily" or "monthly" when the account's budget, not its balance, is what is short.
    budget: Literal["", "daily", "monthly"] = ""


class LowFundsCleared(WalletEvent, frozen=True, kw_only=True):
    """An open low-funds warning is over because its attempt ended (its hold was used up,
    so no `HoldReleased` answers it)."""

    job_id: Id
    attempt: Attempt
    reason: Reason = ""


class ChargeRefunded(WalletEvent, frozen=True, kw_only=True):
    """Everything an attempt lost to its provider was charged goes back to the renter.

    Appended atomically with the `CreditReversed` of the provider's and the platform's
    shares, and the release of the rest of the hold.
    """

    job_id: Id
    attempt: Attempt
    amount: PositiveMoney
    reason: Reason = ""


class CreditReversed(WalletEvent, frozen=True, kw_only=True):
    """A provider's credit (or the platform's fee) for a refunded attempt is taken back."""

    job_id: Id
    attempt: Attempt
    amount: PositiveMoney
    refund_id: EventId


class EarningsSettled(WalletEvent, frozen=True, kw_only=True):
    """An attempt ended as it should: its credits to this provider can no longer be
    reversed, so they may be withdrawn."""

    job_id: Id
    attempt: Attempt


class BudgetSet(WalletEvent, frozen=True, kw_only=True):
    """The renter's spending caps per UTC day and calendar month (None: no cap)."""

    daily: Money | None = None
    monthly: Money | None = None


class WithdrawalRequested(WalletEvent, frozen=True, kw_only=True):
    withdrawal_id: Id
    amount: PositiveMoney
    payout_address: SolanaAddress


class PayoutSigned(WalletEvent, frozen=True, kw_only=True):
    """The settlement signed the payout of a withdrawal, recorded before it is sent: after a
    crash this signature is looked up on chain before anything is signed again."""

    withdrawal_id: Id
    signature: Signature
    #: The signed transaction (base64), to send again until it lands or expires.
    transaction: Annotated[str, msgspec.Meta(max_length=4096)]
    #: The chain's block height after which it can never land.
    last_valid_block_height: Annotated[int, msgspec.Meta(ge=0)]
    #: 1 for the first transaction; one more for each signed after the last expired.
    attempt: Attempt


class FundsWithdrawn(WalletEvent, frozen=True, kw_only=True):
    """A withdrawal was paid: its transaction is confirmed on chain."""

    withdrawal_id: Id
    amount: PositiveMoney
    payout_address: SolanaAddress
    reference: Text = ""
    signature: Signature | None = None


class WithdrawalFailed(WalletEvent, frozen=True, kw_only=True):
    """A withdrawal could not be paid (no transaction of it can land): its funds are
    available again."""

    withdrawal_id: Id
    amount: PositiveMoney
    reason: Reason


# ── payment (one per chain transaction credited) ────────────────────────────────────────


class PaymentEvent(Event, frozen=True, kw_only=True):
    """A transaction on the chain: its aggregate makes a signature creditable once, ever."""

    AGGREGATE: ClassVar[str] = "payment"
    signature: Signature

    @property
    def aggregate_id(self) -> str:
        return self.signature


class PaymentCredited(PaymentEvent, frozen=True, kw_only=True):
    """A verified transfer to the treasury was credited to a wallet; appended atomically with
    its `FundsDeposited` and with expected version 0, so no signature is credited twice."""

    wallet_id: WalletId
    amount: PositiveMoney
    source_owner: SolanaAddress
    slot: Annotated[int, msgspec.Meta(ge=0)] = 0


# ── platform ────────────────────────────────────────────────────────────────────────────


class PlatformEvent(Event, frozen=True, kw_only=True):
    """The platform's own facts, on `dante.evt.platform.<scope>`."""

    AGGREGATE: ClassVar[str] = "platform"

    @property
    def aggregate_id(self) -> str:
        return "settings"


class SettingsChanged(PlatformEvent, frozen=True, kw_only=True):
    """The rules an operator tuned (`dante up --config`, or its options) took effect: all of
    them, as in force from this event on, so a replay knows the rules at any moment. The
    fee of an attempt stays the one its `JobAssigned` carries."""

    fee_bps: Bps
    hold_window_s: Annotated[int, msgspec.Meta(ge=1)]
    grace_s: Annotated[int, msgspec.Meta(ge=0)]
    #: The stop grace billed after a cancel (10 s before it was a setting).
    stop_grace_s: Annotated[int, msgspec.Meta(ge=0)] = 10
    max_attempts: Annotated[int, msgspec.Meta(ge=1)]
    start_timeout_s: Annotated[int, msgspec.Meta(ge=1)]
    offline_after_s: Annotated[int, msgspec.Meta(ge=1)]
    min_withdrawal: PositiveMoney
    usage_slack_ms: Annotated[int, msgspec.Meta(ge=0)]
    #: The names of the settings that differ from those in force before.
    changed: list[Annotated[str, msgspec.Meta(max_length=64)]]
    #: Where they came from: the options and the config file of the process that started.
    source: Text = ""


ProviderEvents = (
    ProviderRegistered
    | OfferUpdated
    | ProviderWentOffline
    | ProviderCameOnline
    | ProviderDeregistered
    | GpusReserved
    | GpusReleased
)
JobEvents = (
    JobSubmitted
    | JobQueued
    | JobAssigned
    | JobAccepted
    | JobDeclined
    | JobStarted
    | UsageRecorded
    | JobCompleted
    | JobFailed
    | JobCancelRequested
    | JobCancelled
    | JobStopped
    | JobResultsStored
    | JobRequeued
)
WalletEvents = (
    AccountOpened
    | FundsDeposited
    | FundsHeld
    | FundsCharged
    | ProviderCredited
    | FeeCollected
    | HoldReleased
    | LowFundsWarned
    | LowFundsCleared
    | ChargeRefunded
    | CreditReversed
    | EarningsSettled
    | BudgetSet
    | WithdrawalRequested
    | PayoutSigned
    | FundsWithdrawn
    | WithdrawalFailed
)
PlatformEvents = SettingsChanged
PaymentEvents = PaymentCredited
AnyEvent = ProviderEvents | JobEvents | WalletEvents | PlatformEvents | PaymentEvents

PROVIDER_EVENTS: tuple[type[ProviderEvent], ...] = ProviderEvents.__args__
JOB_EVENTS: tuple[type[JobEvent], ...] = JobEvents.__args__
WALLET_EVENTS: tuple[type[WalletEvent], ...] = WalletEvents.__args__
PLATFORM_EVENTS: tuple[type[PlatformEvent], ...] = (SettingsChanged,)
PAYMENT_EVENTS: tuple[type[PaymentEvent], ...] = (PaymentCredited,)
ALL_EVENTS: tuple[type[Event], ...] = (
    *PROVIDER_EVENTS,
    *JOB_EVENTS,
    *WALLET_EVENTS,
    *PLATFORM_EVENTS,
    *PAYMENT_EVENTS,
)
EVENT_TYPES: dict[str, type[Event]] = {cls.__name__: cls for cls in ALL_EVENTS}

#: A job's terminal events: after one of them nothing is charged and its GPUs are free.
JOB_ENDED = (JobCompleted, JobFailed, JobCancelled, JobStopped)
