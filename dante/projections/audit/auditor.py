"""The auditor: every family of checks folded over the log in one pass, in memory.

`Auditor.apply(seq, event, batch_id=, committed=)` is pure (no I/O): each family checks the
event against the facts as they stood before it, then the facts take the event in. Where the
log is at a committed position (a single append, or the last message of an atomic batch),
the families check what must hold between decisions (conservation, no negative balance,
complete charge batches). `finish()` makes the checks that need the whole log.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Protocol

from dante.projections.audit.charges import ChargeChecks
from dante.projections.audit.facts import Facts, Handler
from dante.projections.audit.gpus import GpuChecks
from dante.projections.audit.holds import HoldChecks
from dante.projections.audit.lifecycle import LifecycleChecks
from dante.projections.audit.money import MoneyChecks
from dante.projections.audit.report import (
    Findings,
    PendingSettlement,
    SimulatedUsage,
    Violation,
)
from dante.projections.audit.simulated import SimulatedTelemetry
from dante.schemas import events as ev

#: How long after an attempt's end its settlement may still be on its way.
SETTLE_GRACE = timedelta(seconds=60)


class Family(Protocol):
    def handlers(self) -> Mapping[type[ev.Event], Handler]: ...

    def committed(self, seq: int) -> None: ...

    def finish(self) -> None: ...


class Auditor:
    """Checks events one by one, in log order, from sequence 1."""

    def __init__(self, *, max_per_code: int = 100, settle_grace: timedelta = SETTLE_GRACE) -> None:
        self.findings = Findings(max_per_code=max_per_code)
        self.facts = Facts()
        self._money = MoneyChecks(self.facts, self.findings)
        self._holds = HoldChecks(self.facts, self.findings, self._money, settle_grace)
        self._simulated = SimulatedTelemetry()
        families: list[Family] = [
            LifecycleChecks(self.facts, self.findings),
            GpuChecks(self.facts, self.findings),
            self._money,
            ChargeChecks(self.facts, self.findings),
            self._holds,
            self._simulated,
        ]
        on: dict[type[ev.Event], list[Handler]] = {}
        for handlers in [*(f.handlers() for f in families), self.facts.handlers()]:
            for kind, handler in handlers.items():
                on.setdefault(kind, []).append(handler)
        self._on: dict[type[ev.Event], tuple[Handler, ...]] = {k: tuple(v) for k, v in on.items()}
        self._at_commit: tuple[Callable[[int], None], ...] = tuple(f.committed for f in families)
        self._families = families
        #: The last sequence audited, how many events that was, and when the last happened.
        self.position = 0
        self.events = 0
        self.last_at: datetime | None = None
        self._finished = False

    def apply(
        self, seq: int, event: ev.Event, *, batch_id: str | None = None, committed: bool = True
    ) -> None:
        """Check one event at sequence `seq`; `committed` when the log is at a committed
        position after it (not inside an atomic batch)."""
        facts = self.facts
        facts.seq, facts.batch_id = seq, batch_id
        for handler in self._on.get(type(event), ()):
            handler(seq, event)
        self.position, self.last_at = seq, event.at
        self.events += 1
        if committed:
            for check in self._at_commit:
                check(seq)

    def unreadable(self, seq: int, reason: str, *, committed: bool = True) -> None:
        """A stored message that is not a readable event: a violation in itself."""
        self.findings.add("unreadable_event", [seq], f"seq {seq} cannot be read: {reason}")
        self.facts.seq, self.facts.batch_id = seq, None
        self.position = seq
        self.events += 1
        if committed:
            for check in self._at_commit:
                check(seq)

    def finish(self) -> list[Violation]:
        """Make the checks that need the whole log; return every violation, in log order."""
        if not self._finished:
            self._finished = True
            self._holds.last_at = self.last_at
            for family in self._families:
                family.finish()
        return self.findings.in_log_order()

    @property
    def pending(self) -> list[PendingSettlement]:
        return list(self._holds.pending)

    @property
    def simulated(self) -> SimulatedUsage:
        """How much usage came from simulated GPUs (made-up telemetry)."""
        return self._simulated.result()

    @property
    def ok(self) -> bool:
        return self.findings.total == 0
