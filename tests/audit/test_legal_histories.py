"""Legal histories audit clean: any sequence of commands through the real deciders and
handlers (the money property test's simulator) gives a log the audit finds nothing in."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dante.events.records import Append, Appended
from dante.projections.audit import Auditor
from tests.handlers.sim import MemoryLog, Sim
from tests.handlers.test_money_properties import DGPU, ops, run


class BatchedLog(MemoryLog):
    """The simulator's log, remembering which appends were atomic batches."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: dict[int, tuple[str | None, bool]] = {}
        self._n = 0

    async def append(self, *items: Append) -> Appended:
        before = len(self.records)
        appended = await super().append(*items)
        seqs = appended.seqs
        if len(self.records) > before:
            self._n += 1
            batch = f"b{self._n}" if len(items) > 1 else None
            for seq in seqs:
                self.batches[seq] = (batch, seq == seqs[-1])
        return appended


def audit_sim(sim: Sim) -> Auditor:
    assert isinstance(sim.log, BatchedLog)
    auditor = Auditor()
    for record in sim.log.records:
        batch, committed = sim.log.batches[record.seq]
        auditor.apply(record.seq, record.event, batch_id=batch, committed=committed)
    auditor.finish()
    return auditor


PROLOGUE: list[tuple[Any, ...]] = [
    ("register", "prv-1", 2, DGPU // 2),
    ("register", "prv-2", 3, DGPU),
    ("register", "prv-3", 1, DGPU // 4),
    ("deposit", "alice", 30 * DGPU),
    ("deposit", "ann", DGPU // 5),
    ("submit", "alice", 1, None),
    ("submit", "ann", 1, None),
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, min_size=5, max_size=80))
# Found by this test: a machine re-registered without a GPU an attempt held, then with it
# again; the GPU was double-booked.
@example(
    steps=[
        ("start", 1),
        ("submit", "alice", 1, None),
        ("start", 2),
        ("register", "prv-1", 1, 0),
        ("register", "prv-1", 2, 0),
    ]
)
def test_any_history_the_platform_makes_audits_clean(steps: list[tuple[Any, ...]]) -> None:
    sim = Sim()
    sim.log = BatchedLog()
    ticks: dict[str, int] = {}
    for op in PROLOGUE + steps:
        run(sim, op, ticks)
    # Let every grace period and timeout run out, so every attempt ends or runs on.
    sim.advance(3600)
    sim.tick()
    auditor = audit_sim(sim)
    assert auditor.finish() == [], [v.message for v in auditor.finish()]


def test_the_benchmarks_synthetic_log_is_legal() -> None:
    from bench.replay import SyntheticLog

    log = SyntheticLog(providers=3, gpus=2, renters=5, ticks_per_job=4)
    auditor = Auditor()
    seq = 0
    for n, decision in enumerate(log.decisions(2_000)):
        for i, event in enumerate(decision, start=1):
            seq += 1
            batch = f"d{n}" if len(decision) > 1 else None
            auditor.apply(seq, event, batch_id=batch, committed=i == len(decision))
    assert auditor.finish() == []
    assert auditor.events == log.seq >= 2_000 and auditor.pending == []
