"""Money: integer micro-dGPU (µdGPU), exact decimal parsing and formatting, the charge rule.

No float ever takes part in a money computation. Rates are µdGPU per GPU-hour; time is
integer milliseconds of GPU time.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Final

import msgspec

UDGPU_PER_DGPU: Final = 1_000_000
MS_PER_HOUR: Final = 3_600_000
BPS_PER_UNIT: Final = 10_000
#: The largest amount any field may carry (a billion dGPU). Sums of many such amounts still
#: fit the signed 64-bit integers that msgspec and SQLite store.
MAX_UDGPU: Final = 10**9 * UDGPU_PER_DGPU

Money = Annotated[
    int,
    msgspec.Meta(ge=0, le=MAX_UDGPU, description="an amount in µdGPU (1 dGPU = 1,000,000 µdGPU)"),
]
PositiveMoney = Annotated[
    int,
    msgspec.Meta(gt=0, le=MAX_UDGPU, description="a positive amount in µdGPU"),
]
#: A price per GPU-hour, in µdGPU.
Rate = Annotated[int, msgspec.Meta(ge=0, le=MAX_UDGPU, description="a price in µdGPU per GPU-hour")]
#: Basis points: 500 = 5 %.
Bps = Annotated[int, msgspec.Meta(ge=0, le=BPS_PER_UNIT, description="basis points")]

_DECIMAL = re.compile(r"(?P<whole>[0-9]+)(?:\.(?P<frac>[0-9]+))?|\.(?P<onlyfrac>[0-9]+)")


class MoneyError(ValueError):
    """An amount that is not an exact, well-formed number of µdGPU."""


def parse_dgpu(text: str, *, allow_zero: bool = False) -> int:
    """Parse a decimal dGPU string ("10", "0.5", "1.000001") into µdGPU, exactly.

    Refuses signs, exponents, separators, more than six decimals (not a whole µdGPU), zero
    unless allowed, and anything above the largest representable amount.
    """
    if not isinstance(text, str):  # a float slipping in from a caller is a bug, not an input
        raise MoneyError(f"amount must be a decimal string, not {type(text).__name__}")
    raw = text.strip()
    match = _DECIMAL.fullmatch(raw)
    if match is None:
        raise MoneyError(
            f"{text!r} is not an amount: write a plain decimal number of dGPU, like 10 or 0.25"
        )
    whole = match["whole"] or "0"
    frac = (match["frac"] or match["onlyfrac"] or "").rstrip("0")
    if len(frac) > 6:
        raise MoneyError(
            f"{text!r} has more than 6 decimals: the smallest amount is 0.000001 dGPU (1 µdGPU)"
        )
    value = int(whole) * UDGPU_PER_DGPU + int(frac.ljust(6, "0") or "0")
    if value > MAX_UDGPU:
        raise MoneyError(f"{text!r} is larger than the largest amount Dante accepts")
    if value == 0 and not allow_zero:
        raise MoneyError(f"{text!r} is zero: the amount must be positive")
    return value


def format_dgpu(udgpu: int, *, places: int | None = None) -> str:
    """Format µdGPU as a dGPU decimal string, exactly: 1500000 -> "1.5".

    With `places`, pads (never rounds away) to at least that many decimals, for tables.
    """
    if isinstance(udgpu, bool) or not isinstance(udgpu, int):
        raise MoneyError(f"amount must be an integer of µdGPU, not {type(udgpu).__name__}")
    sign = "-" if udgpu < 0 else ""
    whole, frac = divmod(abs(udgpu), UDGPU_PER_DGPU)
    digits = f"{frac:06d}".rstrip("0")
    if places is not None:
        digits = digits.ljust(min(places, 6), "0")
    return f"{sign}{whole}.{digits}" if digits else f"{sign}{whole}"


def cost(rate: int, gpu_ms: int) -> int:
    """What `gpu_ms` milliseconds of GPU time cost at `rate` µdGPU per GPU-hour, rounded down.

    This is the one rounding rule for usage. Billing applies it to the running total of an
    assignment's GPU time and charges the difference, so a whole assignment is rounded once
    and no tick loses or gains a fraction.
    """
    return rate * gpu_ms // MS_PER_HOUR


def fee_of(amount: int, fee_bps: int) -> int:
    """The platform's share of `amount` at `fee_bps` basis points, rounded down.

    Like `cost`, it is applied to running totals; the provider gets the rest, so the two
    shares always add up to the amount exactly.
    """
    return amount * fee_bps // BPS_PER_UNIT


# ── budget periods ──────────────────────────────────────────────────────────────────────


def periods(at: datetime) -> tuple[str, str]:
    """The UTC day and calendar month of `at`, as "YYYY-MM-DD" and "YYYY-MM"."""
    utc = at.astimezone(UTC)
    return f"{utc:%Y-%m-%d}", f"{utc:%Y-%m}"


def period_ends(now: datetime) -> tuple[datetime, datetime]:
    """When `now`'s UTC day and calendar month end."""
    utc = now.astimezone(UTC)
    day = datetime(utc.year, utc.month, utc.day, tzinfo=UTC) + timedelta(days=1)
    year, month = (utc.year + 1, 1) if utc.month == 12 else (utc.year, utc.month + 1)
    return day, datetime(year, month, 1, tzinfo=UTC)
