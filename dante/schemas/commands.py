"""Every command a client can send, and the reply envelope every command gets.

A command is an imperative request sent on `dante.cmd.<role>.<identity>.<verb>`. The identity
comes from the subject, never from the body, so nats-server permissions on subjects decide who
may act as whom. Each command carries a client-made `command_id`: a retry with the same id gets
the same reply and appends nothing new.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar, get_args, get_origin

import msgspec

from dante.schemas.chain import ChainAudit, ChainInfo, FaucetResult
from dante.schemas.money import Money, PositiveMoney, Rate
from dante.schemas.quotes import Quote
from dante.schemas.results import (
    BudgetResult,
    ChunkResult,
    JobResult,
    LogPage,
    OutputResult,
    ProviderResult,
    SubmitResult,
    UploadResult,
    WalletResult,
)
from dante.schemas.statements import JobStatement
from dante.schemas.values import (
    Attempt,
    FileRef,
    Gpu,
    GpuOffer,
    Id,
    JobPayload,
    JobRequirements,
    Reason,
    RelPath,
    Signature,
    SolanaAddress,
    Text,
    Timestamp,
    UsageTick,
)
from dante.schemas.views import Balance, JobView, LedgerEntry, OfferRow, PlatformSummary

#: What a command is answered with.
R = TypeVar("R")

CommandId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{8,64}$")]
Role = Literal["renter", "provider", "operator"]


class Command(
    msgspec.Struct, Generic[R], frozen=True, gc=False, kw_only=True, forbid_unknown_fields=True
):
    """The envelope every command shares. `R` is what the platform answers it with
    (`Command[WalletResult]`): `reply_type` reads it, and the client decodes with it."""

    ROLE: ClassVar[Role]
    VERB: ClassVar[str]
    #: Queries change nothing and need no command id to be idempotent.
    QUERY: ClassVar[bool] = False

    command_id: CommandId


class Query(Command[R], Generic[R], frozen=True, kw_only=True, forbid_unknown_fields=True):
    QUERY: ClassVar[bool] = True
    command_id: CommandId = "query-00"


# ── renter ──────────────────────────────────────────────────────────────────────────────


class Deposit(Command[WalletResult], frozen=True, kw_only=True, forbid_unknown_fields=True):
    ROLE: ClassVar[Role] = "renter"
    VERB: ClassVar[str] = "deposit"
    #: What the renter paid, in µdGPU: the transfer must move exactly this.
    amount: PositiveMoney
    reference: Text = ""
    #: The signature of the SPL transfer to the treasury that pays for this deposit.
    signature: Signature | None = None
    #: The signed transfer itself (base64), for the platform to send to the chain first.
    transaction: Annotated[str, msgspec.Meta(max_length=4096)] = ""


class Faucet(Command[FaucetResult], frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Test dGPU (and SOL for fees) for an address: on the local chain only."""

    ROLE: ClassVar[Role] = "renter"
    VERB: ClassVar[str] = "faucet"
    address: SolanaAddress
    amount: PositiveMoney


class SetBudget(Command[BudgetResult], frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Cap what the renter spends per UTC day and/or calendar month; `clear` removes both.

    A cap not given stays as it was. Billing holds no more than a cap leaves (charges of the
    period plus open holds), so a job that would pass it waits, and a running one stops.
    """

    ROLE: ClassVar[Role] = "renter"
    VERB: ClassVar[str] = "budget"
    daily: Money | None = None
    monthly: Money | None = None
    clear: bool = False


class SubmitJob(Command[SubmitResult], frozen=True, kw_only=True, forbid_unknown_fields=True):
    ROLE: ClassVar[Role] = "renter"
    VERB: ClassVar[str] = "submit"
    name: Text = ""
    requirements: JobRequirements
    payload: JobPayload
    inputs: list[FileRef] = msgspec.field(default_factory=list)


class CancelJob(Command[JobResult], frozen=True, kw_only=True, forbid_unknown_fields=True):
    ROLE: ClassVar[Role] = "renter"
    VERB: ClassVar[str] = "cancel"
    job_id: Id
    reason: Reason = ""


# ── provider (the agent, and its owner) ─────────────────────────────────────────────────


class RegisterProvider(
    Command[ProviderResult], frozen=True, kw_only=True, forbid_unknown_fields=True
):
    ROLE: ClassVar[Role] = "provider"
    VERB: ClassVar[str] = "register"
    provider_id: Id
    name: Text
    location: Text = ""
    payout_address: SolanaAddress
    gpus: Annotated[list[Gpu], msgspec.Meta(min_length=1, max_length=64)]
    offers: list[GpuOffer]
    host: Text = ""
    agent_version: Text = ""


class UpdateOffer(Command[ProviderResult], frozen=True, kw_only=True, forbid_unknown_fields=True):
    ROLE: ClassVar[Role] = "provider"
    VERB: ClassVar[str] = "offer"
    provider_id: Id
    offers: Annotated[list[GpuOffer], msgspec.Meta(min_length=1, max_length=64)]


class DeregisterProvider(
    Command[ProviderResult], frozen=True, kw_only=True, forbid_unknown_fields=True
):
    ROLE: ClassVar[Role] = "provider"
    VERB: ClassVar[str] = "deregister"
    provider_id: Id
    reason: Reason = ""


class AcceptAssignment(Command[JobResult], frozen=True, kw_only=True, forbid_unknown_fields=True):
    ROLE: ClassVar[Role] = "provider"
    VERB: ClassVar[str] = "accept"
    provider_id: Id
    job_id: Id
    attempt: Attempt


class DeclineAssignment(Command[JobResult], frozen=True, kw_only=True, forbid_unknown_fields=True):
    ROLE: ClassVar[Role] = "provider"
    VERB: ClassVar[str] = "decline"
    provider_id: Id
    job_id: Id
    attempt: Attempt
    reason: Reason = ""


class ReportJobStarted(Command[JobResult], frozen=True, kw_only=True, forbid_unknown_fields=True):
    ROLE: ClassVar[Role] = "provider"
    VERB: ClassVar[str] = "started"
    provider_id: Id
    job_id: Id
    attempt: Attempt


class RecordUsage(Command[JobResult], frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A batch of ticks for one attempt; ticks already recorded are ignored, not recounted."""

    ROLE: ClassVar[Role] = "provider"
    VERB: ClassVar[str] = "usage"
    provider_id: Id
    job_id: Id
    attempt: Attempt
    ticks: Annotated[list[UsageTick], msgspec.Meta(min_length=1, max_length=1000)]


class ReportJobFinished(Command[JobResult], frozen=True, kw_only=True, forbid_unknown_fields=True):
    ROLE: ClassVar[Role] = "provider"
    VERB: ClassVar[str] = "finished"
    provider_id: Id
    job_id: Id
    attempt: Attempt
    exit_code: int | None = None
    #: Why it did not run to an exit code (image missing, GPU request refused, ...).
    error: Reason = ""
    results: FileRef | None = None
    #: The provider stopped the attempt itself (its agent shut down or restarted): the job
    #: is requeued to run elsewhere rather than failed.
    interrupted: bool = False


class Withdraw(Command[WalletResult], frozen=True, kw_only=True, forbid_unknown_fields=True):
    ROLE: ClassVar[Role] = "provider"
    VERB: ClassVar[str] = "withdraw"
    amount: PositiveMoney
    #: Where to pay; defaults to the payout address of the account's latest registration.
    payout_address: SolanaAddress | None = None


# ── queries (reads served from the projections) ─────────────────────────────────────────


class GetBalance(Query[Balance], frozen=True, kw_only=True, forbid_unknown_fields=True):
    ROLE: ClassVar[Role] = "renter"
    VERB: ClassVar[str] = "balance"


class GetWalletHistory(
    Query[list[LedgerEntry]], frozen=True, kw_only=True, forbid_unknown_fields=True
):
    ROLE: ClassVar[Role] = "renter"
    VERB: ClassVar[str] = "history"
    limit: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 100
    #: Page backwards: only entries before this stream sequence.
    before_seq: Annotated[int, msgspec.Meta(ge=1)] | None = None


class ListOffers(Query[list[OfferRow]], frozen=True, kw_only=True, forbid_unknown_fields=True):
    ROLE: ClassVar[Role] = "renter"
    VERB: ClassVar[str] = "offers"
    gpu_model: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    min_vram_gb: Annotated[int, msgspec.Meta(ge=0)] | None = None
    #: Only providers with at least this many free GPUs matching the filter.
    gpu_count: Annotated[int, msgspec.Meta(ge=1, le=64)] | None = None
    max_price: Rate | None = None
    location: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    sort: Literal["price", "reliability"] = "price"
    include_offline: bool = False


class QuoteJob(Query[Quote], frozen=True, kw_only=True, forbid_unknown_fields=True):
    ROLE: ClassVar[Role] = "renter"
    VERB: ClassVar[str] = "quote"
    requirements: JobRequirements
    #: Hours to price; defaults to the job's maximum duration, else one hour.
    duration_s: Annotated[int, msgspec.Meta(ge=1)] | None = None


class GetJob(Query[JobView], frozen=True, kw_only=True, forbid_unknown_fields=True):
    ROLE: ClassVar[Role] = "renter"
    VERB: ClassVar[str] = "job"
    job_id: Id


class ListJobs(Query[list[JobView]], frozen=True, kw_only=True, forbid_unknown_fields=True):
    ROLE: ClassVar[Role] = "renter"
    VERB: ClassVar[str] = "jobs"
    state: Annotated[str, msgspec.Meta(max_length=20)] | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 100


class GetChain(Query[ChainInfo], frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The chain the platform settles on; with `address`, that wallet's balances there."""

    ROLE: ClassVar[Role] = "renter"
    VERB: ClassVar[str] = "chain"
    address: SolanaAddress | None = None


class AuditChain(Query[ChainAudit], frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The treasury's balance and the transfers of these signatures, for the audit."""

    ROLE: ClassVar[Role] = "operator"
    VERB: ClassVar[str] = "chain"
    signatures: Annotated[list[Signature], msgspec.Meta(max_length=500)] = msgspec.field(
        default_factory=list
    )


class GetPlatformStatus(
    Query[PlatformSummary], frozen=True, kw_only=True, forbid_unknown_fields=True
):
    ROLE: ClassVar[Role] = "operator"
    VERB: ClassVar[str] = "status"


class GetJobStatement(Query[JobStatement], frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A job's statement: every event of its life, its usage, charges and fee, and a digest
    chained over those events that the renter and the provider can compare."""

    ROLE: ClassVar[Role] = "renter"
    VERB: ClassVar[str] = "statement"
    job_id: Id
    #: As of this stream sequence (default: now), so both sides can compare at one position.
    to_seq: Annotated[int, msgspec.Meta(ge=1)] | None = None


class GetProviderJobStatement(
    Query[JobStatement], frozen=True, kw_only=True, forbid_unknown_fields=True
):
    """The same statement, for the account whose provider ran (or runs) an attempt of it."""

    ROLE: ClassVar[Role] = "provider"
    VERB: ClassVar[str] = "statement"
    job_id: Id
    to_seq: Annotated[int, msgspec.Meta(ge=1)] | None = None


# ── job output and files ────────────────────────────────────────────────────────────────
#
# Job output and files travel through the command service, which checks that the job is the
# caller's, so nats-server permissions can stay per account (no one touches the output
# stream or the object store directly). Chunks are at most 512 KiB; a retried chunk (same
# offset) is stored once.

CHUNK_BYTES = 512 * 1024
Chunk = Annotated[bytes, msgspec.Meta(max_length=CHUNK_BYTES)]
Sha256 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
UploadId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{8,64}$")]


class OutputLine(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    at: Timestamp
    stream: Literal["stdout", "stderr"]
    text: Annotated[str, msgspec.Meta(max_length=16_384)]


class RecordOutput(Command[OutputResult], frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A batch of a running job's output lines, for `dante jobs logs`."""

    ROLE: ClassVar[Role] = "provider"
    VERB: ClassVar[str] = "output"
    provider_id: Id
    job_id: Id
    attempt: Attempt
    lines: Annotated[list[OutputLine], msgspec.Meta(min_length=1, max_length=2000)]


class UploadResults(Command[UploadResult], frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One chunk of a job attempt's results (a tar.gz); the last one names size and digest."""

    ROLE: ClassVar[Role] = "provider"
    VERB: ClassVar[str] = "upload"
    provider_id: Id
    job_id: Id
    attempt: Attempt
    offset: Annotated[int, msgspec.Meta(ge=0)]
    data: Chunk
    final: bool = False
    size: Annotated[int, msgspec.Meta(ge=0)] | None = None
    sha256: Sha256 | None = None


class UploadInput(Command[UploadResult], frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One chunk of a file a renter gives a job; the last one names size and digest."""

    ROLE: ClassVar[Role] = "renter"
    VERB: ClassVar[str] = "upload"
    upload_id: UploadId
    path: RelPath
    offset: Annotated[int, msgspec.Meta(ge=0)]
    data: Chunk
    final: bool = False
    size: Annotated[int, msgspec.Meta(ge=0)] | None = None
    sha256: Sha256 | None = None


class GetJobLogs(Query[LogPage], frozen=True, kw_only=True, forbid_unknown_fields=True):
    ROLE: ClassVar[Role] = "renter"
    VERB: ClassVar[str] = "logs"
    job_id: Id
    #: Only lines after this position (the `next` of the previous page).
    after: Annotated[int, msgspec.Meta(ge=0)] = 0
    limit: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 1000


class DownloadResults(Query[ChunkResult], frozen=True, kw_only=True, forbid_unknown_fields=True):
    ROLE: ClassVar[Role] = "renter"
    VERB: ClassVar[str] = "download"
    job_id: Id
    offset: Annotated[int, msgspec.Meta(ge=0)] = 0


class FetchInput(Query[ChunkResult], frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An agent reads a file given to a job assigned to it."""

    ROLE: ClassVar[Role] = "provider"
    VERB: ClassVar[str] = "input"
    provider_id: Id
    job_id: Id
    object: Annotated[str, msgspec.Meta(min_length=1, max_length=300)]
    offset: Annotated[int, msgspec.Meta(ge=0)] = 0


RENTER_COMMANDS: tuple[type[Command[Any]], ...] = (
    Deposit,
    SubmitJob,
    CancelJob,
    UploadInput,
    SetBudget,
    Faucet,
)
PROVIDER_COMMANDS: tuple[type[Command[Any]], ...] = (
    RegisterProvider,
    UpdateOffer,
    DeregisterProvider,
    AcceptAssignment,
    DeclineAssignment,
    ReportJobStarted,
    RecordUsage,
    ReportJobFinished,
    Withdraw,
    RecordOutput,
    UploadResults,
)
QUERIES: tuple[type[Command[Any]], ...] = (
    GetBalance,
    GetWalletHistory,
    ListOffers,
    QuoteJob,
    GetJob,
    ListJobs,
    GetPlatformStatus,
    GetJobStatement,
    GetProviderJobStatement,
    GetJobLogs,
    DownloadResults,
    FetchInput,
    GetChain,
    AuditChain,
)
ALL_COMMANDS: tuple[type[Command[Any]], ...] = (*RENTER_COMMANDS, *PROVIDER_COMMANDS, *QUERIES)


# ── replies ─────────────────────────────────────────────────────────────────────────────

ErrorCode = Literal[
    "malformed",  # not a valid command: bad JSON, wrong types, unknown fields
    "invalid",  # well-formed but a value is out of range or inconsistent
    "unknown_verb",
    "forbidden",  # the identity may not do this
    "unknown_provider",
    "unknown_job",
    "not_your_job",
    "not_your_provider",
    "job_finished",
    "wrong_state",  # e.g. usage for an attempt that is not running
    "insufficient_funds",
    "budget_reached",  # the renter's daily or monthly budget leaves too little to hold
    "no_matching_offer",
    "price_cap_too_low",
    "conflict",  # lost a race on the aggregate too many times; safe to retry
    "name_taken",  # sign-up: an account of that name exists
    "unavailable",
    "internal",
    "rate_limited",  # the account sent more than its share; retry after `retry_after_ms`
    "quota_exceeded",  # the account holds as much as it may (machines, stored files)
]


class ErrorInfo(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """A typed rejection: a stable code, a sentence for people, and the field at fault."""

    code: ErrorCode
    message: str
    field: str | None = None
    #: For `rate_limited`: how long to wait before sending again, in milliseconds.
    retry_after_ms: int | None = None


class Reply(msgspec.Struct, frozen=True, gc=False, kw_only=True, omit_defaults=True):
    """What every command and query gets back: a result, or an error and nothing appended."""

    ok: bool
    #: The result as raw JSON, decoded by the caller into the type it expects.
    result: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"null"))
    error: ErrorInfo | None = None
    #: The stream sequences of the events the command appended (empty for queries).
    appended: list[int] = msgspec.field(default_factory=list)


def reply_type(kind: type[Command[Any]]) -> Any:
    """What the platform answers a command of this type with: its `Command[R]`'s `R`."""
    found = _REPLIES.get(kind)
    if found is None:
        for klass in kind.__mro__:
            for base in getattr(klass, "__orig_bases__", ()):
                origin = get_origin(base)
                if isinstance(origin, type) and issubclass(origin, Command):
                    (found,) = get_args(base)
                    if not isinstance(found, TypeVar):
                        _REPLIES[kind] = found
                        return found
        raise TypeError(f"{kind.__name__} does not say what it is answered with")
    return found


_REPLIES: dict[type[Command[Any]], Any] = {}
