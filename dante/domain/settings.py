"""The platform's rules that an operator may tune, in one place, with their defaults."""

from __future__ import annotations

from dataclasses import dataclass

from dante.schemas.money import UDGPU_PER_DGPU


@dataclass(frozen=True, slots=True)
class Settings:
    #: The platform's share of every charge, in basis points (500 = 5 %).
    fee_bps: int = 500
    #: Jobs without a maximum duration are held for this long ahead of use, renewed as used.
    hold_window_s: int = 600
    #: How long a job whose hold cannot be renewed keeps running before it is stopped.
    grace_s: int = 300
    #: How many times a job is placed before it fails (declines, timeouts, lost providers).
    max_attempts: int = 3
    #: An assigned job not started within this long is treated as declined.
    start_timeout_s: int = 120
    #: A provider silent for this long is offline.
    offline_after_s: int = 30
    #: Providers withdraw at least this much.
    min_withdrawal: int = 10 * UDGPU_PER_DGPU
    #: A withdrawal the chain cannot be reached to pay for this long is given back (only
    #: while no transaction of it can still land).
    payout_deadline_s: int = 3600
    #: Slack allowed between reported GPU time and the time a job has been running (clocks,
    #: network delays); a report beyond it is refused.
    usage_slack_ms: int = 5_000
