"""The platform's rules that an operator may tune, in one place, with their defaults.

Two kinds. The rules that decide what the log says (fees, holds, graces, attempts, timeouts:
the keys of `BOUNDS`) are recorded: `dante up` and `dante serve` take them from a TOML file
(`--config`) and options (`Settings.tuned` checks every value against `BOUNDS`); the
effective ones are recorded in the log as `SettingsChanged` whenever they differ from those
recorded last, and a process given none runs with those in force
(`dante.services.settings`). The limits of what one account may ask (admission, quotas,
machines) decide only what is refused, which appends nothing: each process takes them
from its own options (`dante.cli.limits`), and they are not recorded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from dante.schemas import events as ev
from dante.schemas.money import UDGPU_PER_DGPU


class SettingsError(ValueError):
    """A setting that does not exist, or a value it cannot take."""


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
    #: A withdrawal the chain cannot be reached to pay for this long is given back (only
    #: while no transaction of it can still land).
    payout_deadline_s: int = 3600
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

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The recorded rules (`SettingsChanged` carries each)."""
        return tuple(BOUNDS)

    def tuned(self, values: Mapping[str, object], where: str) -> Settings:
        """These settings with `values` instead; `SettingsError` (saying `where` they came
        from) for a name that is no setting or a value out of its bounds."""
        for name, value in values.items():
            if name not in BOUNDS:
                known = ", ".join(self.names())
                raise SettingsError(f"{where}: there is no setting {name!r} (there are {known})")
            low, high, unit = BOUNDS[name]
            if isinstance(value, bool) or not isinstance(value, int):
                raise SettingsError(f"{where}: {name} is a whole number of {unit}, not {value!r}")
            if not low <= value <= high:
                raise SettingsError(
                    f"{where}: {name} is from {low:,} to {high:,} {unit}, not {value:,}"
                )
        return dataclasses.replace(self, **values)  # type: ignore[arg-type]

    def differences(self, other: Settings) -> list[str]:
        """The names of the settings whose values differ between these and `other`."""
        return [name for name in self.names() if getattr(self, name) != getattr(other, name)]

    def recorded(self, event: ev.SettingsChanged) -> Settings:
        """These settings with the rules an event recorded (the limits stay these)."""
        return dataclasses.replace(self, **{name: getattr(event, name) for name in self.names()})

    def as_fields(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.names()}


#: Each setting's lowest and highest value, and its unit. A provider is heard every 5 s, so
#: it goes offline after two beats missed at the soonest; a hold covers a minute at least.
BOUNDS: Final[dict[str, tuple[int, int, str]]] = {
    "fee_bps": (0, 10_000, "basis points"),
    "hold_window_s": (60, 30 * 86_400, "seconds"),
    "grace_s": (0, 7 * 86_400, "seconds"),
    "stop_grace_s": (0, 3_600, "seconds"),
    "max_attempts": (1, 100, "attempts"),
    "start_timeout_s": (10, 86_400, "seconds"),
    "offline_after_s": (10, 86_400, "seconds"),
    "min_withdrawal": (1, 10**15, "µdGPU"),
    "usage_slack_ms": (0, 3_600_000, "milliseconds"),
}
