"""Options every bench takes."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Options:
    #: A short run (smaller fleets, shorter phases): a smoke test of the benches, not numbers.
    quick: bool = False
    #: Scale of the fleet benches, overriding the defaults (10,000 GPUs / agents).
    fleet: int | None = None
    #: Seconds of each measured phase, overriding the defaults.
    seconds: float | None = None
