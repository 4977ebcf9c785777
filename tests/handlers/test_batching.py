"""Deciding many triggers at once: skipped event types, and billing's merged usage charges."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest

from dante.domain.decision import Decision
from dante.domain.model import World
from dante.events.codec import Recorded
from dante.events.records import Append
from dante.events.subjects import subject_of
from dante.handlers.billing import Billing
from dante.handlers.dispatcher import Dispatcher
from dante.handlers.liveness import Liveness
from dante.handlers.runner import event_type
from dante.handlers.scheduler import Scheduler
from dante.schemas import events as ev
from dante.schemas.codec import encode
from dante.schemas.money import cost
from dante.schemas.values import GpuSample, UsageTick
from tests.factories import NOW, deposit, make, registered, sample_events, submitted

PRICE = 500_000
WINDOW = cost(PRICE, 600_000)


def test_event_type_reads_the_tag_of_every_event() -> None:
    for event in sample_events():
        assert event_type(encode(event)) == type(event).__name__
    assert event_type(b"not json") is None


@pytest.mark.parametrize("handler", [Scheduler(), Billing(), Dispatcher(), Liveness()])
def test_handlers_act_on_no_event_outside_their_triggers(handler) -> None:
    world = World()
    for seq, event in enumerate(sample_events(), start=1):
        world.apply(Recorded(seq=seq, subject="", stored_at=None, event=event))
    for seq, event in enumerate(sample_events(), start=1000):
        if type(event).__name__ in handler.triggers:
            continue
        recorded = Recorded(seq=seq, subject="", stored_at=None, event=event)
        assert list(handler.decide(world, recorded, NOW)) == []


class Log:
    """A world fed events at increasing sequences, as the log would."""

    def __init__(self) -> None:
        self.world = World()
        self.seqs = itertools.count(1)

    def add(self, *events: ev.Event) -> list[Recorded]:
        out = []
        for event in events:
            seq = next(self.seqs)
            recorded = Recorded(seq=seq, subject="", stored_at=None, event=event)
            self.world.apply(recorded)
            out.append(recorded)
        return out

    def land(self, steps: list[Decision]) -> None:
        self.add(*(item.event for step in steps for item in step.appends))


def _running(log: Log, job_id: str, provider: str, owner: str) -> None:
    job = {"job_id": job_id, "attempt": 1}
    log.add(
        submitted(job_id, renter="alice"),
        make(ev.GpusReserved, provider_id=provider, gpu_indices=[0], **job),
        make(ev.FundsHeld, wallet_id="alice", amount=WINDOW, **job),
        make(
            ev.JobAssigned,
            provider_id=provider,
            provider_owner=owner,
            gpu_indices=[0],
            price=PRICE,
            fee_bps=500,
            hold=WINDOW,
            **job,
        ),
        make(ev.JobStarted, **job),
    )


def _usage(job_id: str, seconds: int) -> ev.UsageRecorded:
    tick = UsageTick(
        seq=1,
        ended_at=NOW + timedelta(seconds=seconds),
        samples=[GpuSample(index=0, gpu_ms=seconds * 1000)],
    )
    return make(ev.UsageRecorded, job_id=job_id, attempt=1, ticks=[tick])


def _fleet() -> tuple[Log, list[Recorded]]:
    """Alice runs two jobs; her wallet can renew only one of their holds."""
    log = Log()
    log.add(registered("prv-1", owner="bob", n=1), registered("prv-2", owner="carol", n=1))
    log.add(make(ev.FundsDeposited, wallet_id="alice", amount=2 * WINDOW + 100_000))
    _running(log, "job-1", "prv-1", "bob")
    _running(log, "job-2", "prv-2", "carol")
    # 400 s used of a 600 s hold: less than half a window is left, so each wants renewing.
    triggers = log.add(_usage("job-1", 400), _usage("job-2", 400))
    return log, triggers


def test_billing_merges_a_renters_charges_into_one_step_checked_once() -> None:
    log, triggers = _fleet()
    steps = list(Billing().decide_many(log.world, triggers, NOW))
    assert len(steps) == 1
    alice = subject_of("wallet", "alice")
    checked = [a for a in steps[0].appends if a.expected is not None]
    assert [a.subject for a in checked] == [alice]
    kinds = [type(a.event).__name__ for a in steps[0].appends]
    assert kinds.count("FundsCharged") == 2
    # Only one renewal fits the wallet: the second attempt is warned, not held again.
    assert kinds.count("FundsHeld") == 1
    assert kinds.count("LowFundsWarned") == 1


def test_merged_billing_decides_as_one_by_one_does() -> None:
    one_by_one, triggers = _fleet()
    billing = Billing()
    for recorded in triggers:
        one_by_one.land(list(billing.decide(one_by_one.world, recorded, NOW)))
    merged, triggers = _fleet()
    merged.land(list(billing.decide_many(merged.world, triggers, NOW)))
    for wallet in ("alice", "bob", "carol", "platform"):
        assert merged.world.wallet(wallet).available == one_by_one.world.wallet(wallet).available
        assert merged.world.wallet(wallet).holds == one_by_one.world.wallet(wallet).holds
    # Deciding again yields nothing: all landed.
    assert list(billing.decide_many(merged.world, triggers, NOW)) == []


def test_a_step_checking_what_the_batch_writes_clashes() -> None:
    from dante.handlers.executor import _Batch

    batch = _Batch()
    charge = make(ev.FundsDeposited, wallet_id="alice", amount=1)
    other = make(ev.FundsDeposited, wallet_id="bob", amount=1)
    batch.add(
        Decision(appends=[Append(event=charge, expected=3), Append(event=deposit("carol", 1))])
    )
    assert not batch.clashes(Decision(appends=[Append(event=other, expected=4)]))
    assert not batch.clashes(Decision(appends=[Append(event=deposit("carol", 2))]))
    assert batch.clashes(Decision(appends=[Append(event=deposit("carol", 3), expected=9)]))
    assert batch.clashes(Decision(appends=[Append(event=deposit("alice", 3), expected=3)]))
