"""Each kind of violation, written straight into the stream as a buggy or tampering writer
would (bypassing the command service), is named by the audit with the sequences involved.

Every case starts from the same legal history (which audits clean), appends its tampering,
and states exactly which codes the audit must report and at which sequences: nothing else
may be reported, so the audit is shown to be precise as well as sensitive.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from dante.events.store import EventStore
from dante.projections import rebuild
from dante.projections.audit import CHECKS, AuditReport, audit
from dante.projections.sqlite import connect
from dante.schemas import events as ev
from dante.schemas.money import UDGPU_PER_DGPU, cost
from tests.audit.script import PRICE, Script

pytestmark = pytest.mark.anyio

DGPU = UDGPU_PER_DGPU
HOLD = cost(PRICE, 600_000)

#: Sequences of the base history's events that cases refer to.
JOB1_ENDED = 13
JOB2_ASSIGNED = 19
JOB2_CHARGED = 22
JOB3_RESERVED = 26
JOB3_ASSIGNED = 28


def base() -> Script:
    """A legal history: job-1 ran, was charged and settled; job-2 runs and was charged once;
    job-3 is assigned and has not started. prv-1 has three GPUs, one per job."""
    s = Script()
    s.deposit("alice", 100 * DGPU)  # 1
    s.deposit("carol", 100 * DGPU)  # 2
    s.register("prv-1", "bob", 3)  # 3
    s.submit("job-1", "alice")  # 4
    s.assign("job-1", "prv-1", "bob", [0], HOLD)  # 5-7
    s.start("job-1")  # 8
    s.usage("job-1", 10_000)  # 9
    s.charge("job-1")  # 10-12
    assert s.end("job-1") == [JOB1_ENDED]
    s.release_gpus("job-1")  # 14
    s.settle("job-1")  # 15
    s.submit("job-2", "alice")  # 16
    assert s.assign("job-2", "prv-1", "bob", [1], HOLD)[-1] == JOB2_ASSIGNED
    s.start("job-2")  # 20
    s.usage("job-2", 20_000)  # 21
    assert s.charge("job-2")[0] == JOB2_CHARGED
    s.submit("job-3", "carol")  # 25
    assert s.assign("job-3", "prv-1", "bob", [2], HOLD) == [JOB3_RESERVED, 27, JOB3_ASSIGNED]
    return s


Expected = dict[str, list[list[int]]]
Case = Callable[[Script], Expected]


def lone_credit(s: Script) -> Expected:
    (seq,) = s.emit(
        s.make(
            ev.ProviderCredited,
            wallet_id="bob",
            job_id="job-2",
            attempt=1,
            amount=5,
            charge_id="made-up",
        )
    )
    return {"conservation": [[seq]], "charge_batch": [[seq]]}


def overdrawn(s: Script) -> Expected:
    (seq,) = s.emit(
        s.make(ev.FundsHeld, wallet_id="alice", job_id="job-2", attempt=1, amount=500 * DGPU)
    )
    return {"negative_balance": [[seq]]}


def released_twice(s: Script) -> Expected:
    (seq,) = s.emit(s.make(ev.HoldReleased, wallet_id="alice", job_id="job-1", attempt=1, amount=1))
    return {"negative_hold": [[seq]]}


def paid_without_request(s: Script) -> Expected:
    (seq,) = s.emit(
        s.make(
            ev.FundsWithdrawn,
            wallet_id="bob",
            withdrawal_id="wd-1",
            amount=DGPU,
            payout_address="9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin",
        )
    )
    return {"withdrawal": [[seq]], "conservation": [[seq]]}


def charged_at_another_price(s: Script) -> Expected:
    s.usage("job-2", 10_000)
    charge, *_ = s.charge("job-2", charge={"price": 2 * PRICE})
    return {"charge_price": [[JOB2_ASSIGNED, charge]]}


def charged_to_another_wallet(s: Script) -> Expected:
    s.usage("job-2", 10_000)
    charge, *_ = s.charge("job-2", charge={"wallet_id": "carol"})
    return {"charge_wallet": [[JOB2_ASSIGNED, charge]], "negative_hold": [[charge]]}


def charged_for_unrecorded_time(s: Script) -> Expected:
    s.usage("job-2", 10_000)
    charge, *_ = s.charge("job-2", total=s.jobs["job-2"].recorded + 60_000)
    return {"charge_usage": [[charge]]}


def charged_one_too_many(s: Script) -> Expected:
    s.usage("job-2", 10_000)
    charged, credited, collected = s.charge_events("job-2")
    charge, *_ = s.emit(
        msgspec.structs.replace(charged, amount=charged.amount + 1),
        msgspec.structs.replace(credited, amount=credited.amount + 1),
        collected,
    )
    return {"charge_amount": [[charge]]}


def charged_in_three_appends(s: Script) -> Expected:
    s.usage("job-2", 10_000)
    charged, credited, collected = s.charge_events("job-2")
    (charge,) = s.emit(charged)
    (credit,) = s.emit(credited)
    (fee,) = s.emit(collected)
    return {
        "charge_batch": [[charge], [credit], [fee]],
        "conservation": [[charge], [credit]],
    }


def fee_too_high(s: Script) -> Expected:
    s.usage("job-2", 10_000)
    charged, credited, collected = s.charge_events("job-2")
    charge, _, fee = s.emit(
        charged,
        msgspec.structs.replace(credited, amount=credited.amount - 1),
        msgspec.structs.replace(collected, amount=collected.amount + 1),
    )
    return {"fee_split": [[charge, fee]]}


def credit_to_someone_else(s: Script) -> Expected:
    s.usage("job-2", 10_000)
    _, credit, _ = s.charge("job-2", credit={"wallet_id": "carol"})
    return {"credit_split": [[JOB2_ASSIGNED, credit]]}


def charged_before_start(s: Script) -> Expected:
    (usage,) = s.usage("job-3", 10_000)
    charge, *_ = s.charge("job-3")
    return {
        "usage_before_start": [[usage]],
        "charge_before_start": [[JOB3_ASSIGNED, charge]],
    }


def charged_after_end(s: Script) -> Expected:
    (usage,) = s.usage("job-1", 10_000)
    charge, *_ = s.charge("job-1")  # its hold is gone: all of it is uncovered
    return {
        "usage_after_end": [[JOB1_ENDED, usage]],
        "charge_after_end": [[JOB1_ENDED, charge]],
    }


def started_after_completion(s: Script) -> Expected:
    (seq,) = s.emit(s.make(ev.JobStarted, job_id="job-1", attempt=1))
    return {"illegal_transition": [[seq]]}


def held_after_end(s: Script) -> Expected:
    s.later(3600)
    (seq,) = s.emit(s.make(ev.FundsHeld, wallet_id="alice", job_id="job-1", attempt=1, amount=1000))
    return {"hold_after_end": [[JOB1_ENDED, seq]], "hold_not_released": [[JOB1_ENDED, seq]]}


def never_settled(s: Script) -> Expected:
    (ended,) = s.end("job-2")
    s.later(3600).deposit("carol", 1)
    return {"hold_not_released": [[JOB2_CHARGED, ended]]}


def double_booked(s: Script) -> Expected:
    s.submit("job-5", "carol")
    reserved, *_ = s.assign("job-5", "prv-1", "bob", [2], HOLD)
    return {"gpu_double_booked": [[JOB3_RESERVED, reserved]]}


def assigned_unreserved(s: Script) -> Expected:
    s.submit("job-5", "carol")
    *_, assigned = s.assign("job-5", "prv-1", "bob", [0], HOLD, reserve=False)
    return {"assignment_gpus": [[assigned]]}


def assigned_to_pay_someone_else(s: Script) -> Expected:
    s.submit("job-5", "carol")
    *_, assigned = s.assign("job-5", "prv-1", "carol", [0], HOLD)
    return {"assignment_owner": [[assigned]]}


def assigned_above_the_listed_price(s: Script) -> Expected:
    s.submit("job-5", "carol")
    *_, assigned = s.assign("job-5", "prv-1", "bob", [0], HOLD, price=PRICE + 1)
    return {"assignment_price": [[assigned]]}


def assigned_above_the_cap(s: Script) -> Expected:
    s.submit("job-5", "carol", max_price=PRICE - 1)
    *_, assigned = s.assign("job-5", "prv-1", "bob", [0], HOLD)
    return {"assignment_price": [[assigned]]}


def billed_past_the_stop_grace(s: Script) -> Expected:
    s.submit("job-5", "carol")
    s.assign("job-5", "prv-1", "bob", [0], HOLD, stop_grace_s=10)  # job-1 gave GPU 0 back
    s.start("job-5")
    s.emit(s.make(ev.JobCancelRequested, job_id="job-5", by="carol"))
    s.later(60)
    s.usage("job-5", 60_000)
    charge, *_ = s.charge("job-5")  # all 60 s, not the 10 s of grace
    return {"charge_billable": [[charge]], "charge_amount": [[charge]]}


def charged_after_the_loss(s: Script) -> Expected:
    s.usage("job-2", 10_000)
    (lost,) = s.emit(
        s.make(ev.JobRequeued, job_id="job-2", attempt=1, next_attempt=2, provider_id="prv-1")
    )
    charge, *_ = s.charge("job-2")
    return {"charge_lost": [[lost, charge]]}


def refunded_without_a_loss(s: Script) -> Expected:
    refund = s.make(ev.ChargeRefunded, wallet_id="alice", job_id="job-1", attempt=1, amount=5)
    seqs = s.emit(
        refund,
        s.make(
            ev.CreditReversed,
            wallet_id="bob",
            job_id="job-1",
            attempt=1,
            amount=5,
            refund_id=refund.event_id,
        ),
    )
    return {"refund": [[seqs[0]], [seqs[0], seqs[1]]]}


CASES: list[Case] = [
    lone_credit,
    overdrawn,
    released_twice,
    paid_without_request,
    charged_at_another_price,
    charged_to_another_wallet,
    charged_for_unrecorded_time,
    charged_one_too_many,
    charged_in_three_appends,
    fee_too_high,
    credit_to_someone_else,
    charged_before_start,
    charged_after_end,
    started_after_completion,
    held_after_end,
    never_settled,
    double_booked,
    assigned_unreserved,
    assigned_to_pay_someone_else,
    assigned_above_the_listed_price,
    assigned_above_the_cap,
    billed_past_the_stop_grace,
    charged_after_the_loss,
    refunded_without_a_loss,
]


def named(report: AuditReport) -> Expected:
    found: Expected = {}
    for violation in report.violations:
        found.setdefault(violation.code, []).append(violation.seqs)
    return found


async def test_the_base_history_audits_clean(store: EventStore) -> None:
    script = base()
    last = await script.append_to(store)
    report = await audit(store)
    assert report.ok, report.violations
    assert (report.position, report.events) == (last, last)
    assert report.pending == []
    assert set(report.counts) == set(CHECKS)


@pytest.mark.parametrize("case", CASES, ids=[case.__name__ for case in CASES])
async def test_the_audit_names_each_tampering(store: EventStore, case: Case) -> None:
    script = base()
    expected = case(script)
    await script.append_to(store)
    report = await audit(store)
    assert not report.ok
    assert named(report) == expected, [v.message for v in report.violations]
    assert {code for code, count in report.counts.items() if count} == set(expected)


async def test_an_event_that_cannot_be_read_is_named(store: EventStore) -> None:
    script = base()
    last = await script.append_to(store)
    ack = await store._js.publish("dante.evt.job.job-9", b'{"type": "JobTeleported"}')
    report = await audit(store)
    assert ack.seq == last + 1
    assert named(report) == {"unreadable_event": [[ack.seq]]}
    assert "JobTeleported" in report.violations[0].message


async def test_live_views_that_differ_from_the_log_are_named(
    store: EventStore, tmp_path: Path
) -> None:
    script = base()
    last = await script.append_to(store)
    views = tmp_path / "views.sqlite3"
    await rebuild(store, views)
    assert (await audit(store, views=views)).ok
    db = await connect(views)
    await db.execute(
        "UPDATE wallet_accounts SET available_udgpu = available_udgpu + 1 WHERE wallet_id = 'bob'"
    )
    await db.close()
    report = await audit(store, views=views)
    assert named(report) == {"views_differ": [[last]]}
    assert report.views is not None and report.views.differing_rows == {"wallet_accounts": 2}
    assert "bob" in report.violations[0].message


async def test_live_views_beyond_the_log_are_named(store: EventStore, tmp_path: Path) -> None:
    script = base()
    last = await script.append_to(store)
    views = tmp_path / "views.sqlite3"
    await rebuild(store, views)
    db = await connect(views)
    await db.execute("UPDATE projection_positions SET seq = 1000")
    await db.close()
    report = await audit(store, views=views)
    assert named(report) == {"views_ahead": [[last]]}


def test_every_check_has_a_tampering_case() -> None:
    covered = {code for case in CASES for code in case(base())}
    covered |= {"unreadable_event", "views_differ", "views_ahead"}
    assert covered == set(CHECKS)
