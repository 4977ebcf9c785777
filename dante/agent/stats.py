"""What the agent counts as it works: plain integers, updated in the loops that do the work
and read by its metrics when scraped (`dante.agent.metrics`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class AgentStats:
    #: Usage reports the platform took (commands), the ticks and the GPU-ms they carried.
    usage_reports: int = 0
    usage_ticks: int = 0
    usage_gpu_ms: int = 0
    #: Ticks the platform refused (an attempt that had ended or moved).
    usage_refused_ticks: int = 0
    #: Attempts begun here (assigned, or recovered from the journal at start).
    attempts_started: int = 0
    #: Attempts reported finished, by outcome: completed, failed, interrupted.
    attempts_finished: Counter[str] = field(default_factory=Counter)
    #: Assignments declined.
    declined: int = 0
