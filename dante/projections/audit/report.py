"""What an audit finds: the catalogue of checks, violations, and the report.

Every check has a stable code, a family (the module that makes it) and the rule it holds
the log to. A violation names its code, the stream sequences involved and, where it has
them, the job attempt, wallet or provider, so an auditor can go straight to the events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

import msgspec

Family = Literal["log", "money", "charges", "holds", "gpus", "jobs", "views"]


@dataclass(frozen=True, slots=True)
class Check:
    code: str
    family: Family
    rule: str


CHECKS: Final[dict[str, Check]] = {
    check.code: check
    for check in (
        Check("unreadable_event", "log", "every stored event decodes as a known event"),
        Check(
            "conservation",
            "money",
            "at every committed position, all balances, holds and pending withdrawals add "
            "up to deposits minus completed withdrawals",
        ),
        Check("negative_balance", "money", "no wallet's available balance is below zero"),
        Check("negative_hold", "money", "no hold is charged or released beyond what it holds"),
        Check("withdrawal", "money", "a withdrawal pays exactly what was requested, once"),
        Check(
            "charge_price",
            "charges",
            "a charge uses the price and fee rate its attempt was assigned at",
        ),
        Check("charge_wallet", "charges", "a charge is taken from the job's renter"),
        Check(
            "charge_usage",
            "charges",
            "a charge is for GPU time recorded by the attempt's usage, up to the usage it names",
        ),
        Check(
            "charge_amount",
            "charges",
            "amount + uncovered = cost(price, new total) - cost(price, previous total)",
        ),
        Check(
            "charge_batch",
            "charges",
            "a charge, its provider credit and its fee are one atomic batch, in that order",
        ),
        Check(
            "fee_split",
            "charges",
            "the platform's fees of an attempt total fee_of(charged total, fee_bps)",
        ),
        Check(
            "credit_split",
            "charges",
            "the provider's credit is the charge minus the fee, paid to the attempt's provider",
        ),
        Check("charge_before_start", "charges", "no charge before the attempt started"),
        Check(
            "charge_after_end",
            "charges",
            "after an attempt ended, only usage recorded before the end is charged",
        ),
        Check(
            "charge_billable",
            "charges",
            "after a cancel, at most the time until it plus the attempt's stop grace is billed",
        ),
        Check(
            "charge_lost",
            "charges",
            "an attempt lost to its provider is charged nothing after the loss",
        ),
        Check(
            "refund",
            "charges",
            "only a lost attempt is refunded: all it was charged, its credit and fee reversed",
        ),
        Check("usage_before_start", "jobs", "usage is recorded only once the attempt runs"),
        Check("usage_after_end", "jobs", "no usage is recorded after the attempt ended"),
        Check("illegal_transition", "jobs", "every job event is legal in the job's state"),
        Check("hold_after_end", "holds", "no funds are held for an attempt that has ended"),
        Check(
            "hold_not_released",
            "holds",
            "when an attempt ends, its hold is consumed or released",
        ),
        Check(
            "gpu_double_booked",
            "gpus",
            "no GPU is reserved for an attempt while another placed attempt holds it",
        ),
        Check(
            "assignment_gpus",
            "gpus",
            "an assignment's GPUs are reserved for that attempt on that provider",
        ),
        Check(
            "assignment_owner",
            "gpus",
            "an assignment pays the account that registered the provider",
        ),
        Check(
            "assignment_price",
            "gpus",
            "an assignment's price is the GPUs' listed price, within the job's price cap",
        ),
        Check(
            "views_ahead",
            "views",
            "the live views are not beyond the end of the log",
        ),
        Check(
            "views_differ",
            "views",
            "the live views equal, row for row, a replay of the log to their position",
        ),
    )
}


class Violation(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One broken rule: its code, the sequences involved, and what is wrong, in words."""

    code: str
    seqs: list[int]
    message: str
    job_id: str | None = None
    attempt: int | None = None
    wallet_id: str | None = None
    provider_id: str | None = None


class PendingSettlement(msgspec.Struct, frozen=True, kw_only=True):
    """A hold of an attempt that ended just before the end of the audited log: billing
    settles it right after the end, so it is reported, not counted as a violation."""

    job_id: str
    attempt: int
    wallet_id: str
    hold_udgpu: int
    ended_seq: int


class ViewsComparison(msgspec.Struct, frozen=True, kw_only=True):
    """How the live views file compared with a replay of the log to its position."""

    file: str
    position: int
    compared: bool
    #: Per table, rows found in one file and not the other.
    differing_rows: dict[str, int] = msgspec.field(default_factory=dict)
    note: str = ""


class SimulatedUsage(msgspec.Struct, frozen=True, kw_only=True):
    """How much of the audited usage came from simulated GPUs."""

    ticks: int = 0
    gpu_ms: int = 0
    jobs: int = 0
    #: Of those ticks, how many were recorded without the flag (before it existed).
    unmarked_ticks: int = 0


class AuditReport(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    #: The last sequence audited, and how many events that was.
    position: int
    events: int
    seconds: float
    events_per_second: int
    #: Exact number of violations per code (every code checked is listed).
    counts: dict[str, int]
    #: The violations, in log order of the event that broke the rule; at most
    #: `max_per_code` of each code are listed.
    violations: list[Violation]
    truncated: bool
    pending: list[PendingSettlement]
    views: ViewsComparison | None = None
    #: Usage from simulated GPUs, whose telemetry is made up (not a violation).
    simulated: SimulatedUsage = msgspec.field(default_factory=SimulatedUsage)


@dataclass(slots=True)
class Findings:
    """Collects violations, keeping every count exact and at most `max_per_code` of each."""

    max_per_code: int = 100
    listed: list[Violation] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CHECKS, 0))

    def add(
        self,
        code: str,
        seqs: list[int] | tuple[int, ...],
        message: str,
        *,
        job_id: str | None = None,
        attempt: int | None = None,
        wallet_id: str | None = None,
        provider_id: str | None = None,
    ) -> None:
        if code not in CHECKS:
            raise KeyError(f"no check {code!r}")
        count = self.counts[code] = self.counts[code] + 1
        if count <= self.max_per_code:
            self.listed.append(
                Violation(
                    code=code,
                    seqs=sorted(set(seqs)),
                    message=message,
                    job_id=job_id,
                    attempt=attempt,
                    wallet_id=wallet_id,
                    provider_id=provider_id,
                )
            )

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def truncated(self) -> bool:
        return any(count > self.max_per_code for count in self.counts.values())

    def in_log_order(self) -> list[Violation]:
        """By the event that broke the rule (the last sequence each names)."""
        return sorted(self.listed, key=lambda v: (v.seqs[-1] if v.seqs else 0, v.code))
