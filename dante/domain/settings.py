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
    #: After a cancel is asked, a running attempt is billed for at most this long more while
    #: it stops (the agent's default SIGTERM-to-SIGKILL grace); fixed per attempt.
    stop_grace_s: int = 10
    #: How many times a job is placed before it fails (declines, timeouts, lost providers).
    max_attempts: int = 3
    #: An assigned job not started within this long is treated as declined.
    start_timeout_s: int = 120
    #: A provider silent for this long is offline.
    offline_after_s: int = 30
    #: Providers withdraw at least this much.
    min_withdrawal: int = 10 * UDGPU_PER_DGPU
    #: Slack allowed between reported GPU time and the time a job has been running (clocks,
    #: network delays); a report beyond it is refused.
    usage_slack_ms: int = 5_000

    # ── admission: what one account may ask of the platform ─────────────────────────────
    #: Requests (commands and queries) one account may send per second, sustained, to one
    #: command-service instance; more are refused `rate_limited` with a retry-after.
    request_rate: float = 50.0
    #: How many requests an account may send at once above the sustained rate.
    request_burst: int = 200
    #: Commands that append to the log (deposits, submissions, agents' reports...), per
    #: account and second, sustained: a stricter bucket on top of the requests' one.
    write_rate: float = 10.0
    #: How many log-writing commands an account may send at once above `write_rate`.
    write_burst: int = 100
    #: Each machine a provider account has registered adds this many requests a second to
    #: its request bucket (and to its burst): its agents report, stream output, upload.
    machine_request_rate: float = 10.0
    #: ... and this many log-writing commands a second to its write bucket (and burst).
    machine_write_rate: float = 2.0
    #: Machines one provider account may have registered at once.
    max_machines: int = 64
    #: Bytes one renter's stored inputs may take in all (each input is at most 1 GiB).
    input_quota_bytes: int = 4 << 30
    #: An input no waiting or running job names is deleted this long after it was stored.
    input_ttl_s: int = 7 * 24 * 3600
