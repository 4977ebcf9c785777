"""Money rules under random sequences of everything renters, providers and time can do.

After every step: conservation (all balances, holds and pending withdrawals equal deposits
minus withdrawals), no negative balance or hold, every charge exactly its billable usage at
its attempt's price with the fee split exact (after a cancel, at most the time until it plus
the stop grace), no charge outside a running attempt, every ended attempt's hold released,
every attempt lost to its provider refunded in full with its credit and fee reversed, and
nothing ever held beyond what the balance and the renter's budgets allow.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dante.domain.model.wallet import WalletState, evolve_wallet
from dante.domain.rejection import Rejected
from dante.schemas import commands as cmd
from dante.schemas import events as ev
from dante.schemas.money import cost, fee_of
from dante.schemas.values import GpuOffer, GpuSample, JobRequirements, ScriptPayload, UsageTick
from tests.factories import SOLANA, gpu
from tests.handlers.sim import Sim

DGPU = 1_000_000
RENTERS = ["alice", "ann"]
OWNERS = {"prv-1": "bob", "prv-2": "bob", "prv-3": "carol"}


def check_invariants(sim: Sim) -> None:
    world = sim.world
    inside = sum(w.available + w.held + w.pending for w in world.wallets.values())
    outside = sum(w.deposited - w.withdrawn for w in world.wallets.values())
    assert inside == outside, "money was created or destroyed"
    for wallet in world.wallets.values():
        assert wallet.available >= 0, f"{wallet.wallet_id} is negative"
        assert all(v > 0 for v in wallet.holds.values()), f"{wallet.wallet_id} has a bad hold"

    prices: dict[tuple[str, int], tuple[int, int]] = {}
    grace: dict[tuple[str, int], int | None] = {}
    gpus: dict[tuple[str, int], int] = {}
    started: dict[tuple[str, int], datetime] = {}
    cancel_at: dict[tuple[str, int], datetime] = {}
    current: dict[str, int] = {}
    lost: set[tuple[str, int]] = set()
    placed: set[tuple[str, int]] = set()
    credited: dict[tuple[str, int], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    refunded: dict[tuple[str, int], int] = defaultdict(int)
    reversed_: dict[tuple[str, int], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    wallets: dict[str, WalletState] = {}
    recorded: dict[tuple[str, int], int] = defaultdict(int)
    billed: dict[tuple[str, int], int] = defaultdict(int)
    charged: dict[tuple[str, int], int] = defaultdict(int)
    fees: dict[tuple[str, int], int] = defaultdict(int)
    running: set[tuple[str, int]] = set()
    charges: dict[str, ev.FundsCharged] = {}

    def billable(key: tuple[str, int], total: int) -> int:
        if grace.get(key) is None or key not in cancel_at:
            return total
        ran = cancel_at[key] - started.get(key, cancel_at[key])
        until_ms = max(0, int(ran.total_seconds() * 1000)) + (grace[key] or 0) * 1000
        return min(total, until_ms * gpus[key])

    for seq, event in enumerate(sim.events(), start=1):
        if isinstance(event, ev.WalletEvent):
            before = wallets.get(event.wallet_id) or WalletState(wallet_id=event.wallet_id)
            if isinstance(event, ev.FundsHeld):
                allowed, _ = before.spendable(event.at)
                assert event.amount <= allowed, "held beyond the balance or the budget"
            wallets[event.wallet_id] = evolve_wallet(before, event, seq)
        match event:
            case ev.JobAssigned():
                key = (event.job_id, event.attempt)
                prices[key] = (event.price, event.fee_bps)
                grace[key] = event.stop_grace_s
                gpus[key] = len(event.gpu_indices)
                current[event.job_id] = event.attempt
                placed.add(key)
            case ev.JobStarted():
                running.add((event.job_id, event.attempt))
                started.setdefault((event.job_id, event.attempt), event.at)
            case ev.JobCancelRequested():
                # Asked while the attempt holds its GPUs (assigned or running).
                key = (event.job_id, current.get(event.job_id, 0))
                if key in placed:
                    cancel_at.setdefault(key, event.at)
            case ev.UsageRecorded():
                key = (event.job_id, event.attempt)
                assert key in running, "usage recorded outside a running attempt"
                recorded[key] += event.gpu_ms
            case ev.FundsCharged():
                key = (event.job_id, event.attempt)
                price, bps = prices[key]
                assert (event.price, event.fee_bps) == (price, bps), "charged at another price"
                assert event.total_gpu_ms <= recorded[key], "charged for unrecorded time"
                assert key not in lost, "charged for an attempt lost to its provider"
                owed = cost(price, billable(key, event.total_gpu_ms)) - cost(
                    price, billable(key, billed[key])
                )
                assert event.amount + event.uncovered == owed, "charge is not its usage x price"
                billed[key] = event.total_gpu_ms
                charged[key] += event.amount
                charges[event.event_id] = event
            case ev.ProviderCredited():
                charge = charges[event.charge_id]
                assert event.wallet_id == charge.provider_wallet
                credited[(event.job_id, event.attempt)][event.wallet_id] += event.amount
            case ev.FeeCollected():
                key = (event.job_id, event.attempt)
                fees[key] += event.amount
                credited[key][event.wallet_id] += event.amount
                charge = charges[event.charge_id]
                assert fees[key] == fee_of(charged[key], charge.fee_bps), "fee split is off"
            case ev.ChargeRefunded():
                key = (event.job_id, event.attempt)
                assert key in lost, "refunded an attempt that was not lost"
                refunded[key] += event.amount
            case ev.CreditReversed():
                reversed_[(event.job_id, event.attempt)][event.wallet_id] += event.amount
            case ev.JobRequeued():
                running.discard((event.job_id, event.attempt))
                placed.discard((event.job_id, event.attempt))
                lost.add((event.job_id, event.attempt))
            case ev.JobCompleted() | ev.JobFailed() | ev.JobCancelled() | ev.JobStopped():
                if isinstance(event, ev.JobFailed) and event.lost:
                    lost.add((event.job_id, event.attempt or current[event.job_id]))
                running = {k for k in running if k[0] != event.job_id}
                placed = {k for k in placed if k[0] != event.job_id}
            case _:
                pass
    for job in world.jobs.values():
        if job.ended:
            renter = world.wallet(job.renter)
            assert not [k for k in renter.holds if k[0] == job.job_id], "ended job still holds"
            for (job_id, attempt), total in recorded.items():
                if job_id == job.job_id and (job_id, attempt) not in lost:
                    assert billed[(job_id, attempt)] == total, "ended attempt left unbilled"
    for key in lost:
        job = world.job(key[0])
        if job.ended or job.attempt > key[1]:
            # Settled (billing refunds in the step that follows the loss).
            assert refunded[key] == charged[key], "a lost attempt was not refunded in full"
            assert reversed_[key] == {k: v for k, v in credited[key].items() if v}, (
                "a lost attempt's credit and fee were not reversed exactly"
            )


job_ops = st.one_of(
    st.tuples(st.just("start"), st.integers(0, 20)),
    st.tuples(st.just("tick"), st.integers(0, 20), st.integers(1, 900)),
)
ops = st.one_of(
    job_ops,
    job_ops,
    job_ops,
    st.tuples(st.just("deposit"), st.sampled_from(RENTERS), st.integers(1, 20 * DGPU)),
    st.tuples(
        st.just("register"),
        st.sampled_from(sorted(OWNERS)),
        st.integers(1, 3),
        st.integers(0, 3 * DGPU),
    ),
    st.tuples(
        st.just("submit"),
        st.sampled_from(RENTERS),
        st.integers(1, 3),
        st.sampled_from([None, 60, 3600]),
    ),
    st.tuples(st.just("start"), st.integers(0, 20)),
    st.tuples(st.just("tick"), st.integers(0, 20), st.integers(1, 900)),
    st.tuples(st.just("finish"), st.integers(0, 20), st.sampled_from([0, 1])),
    st.tuples(st.just("cancel"), st.integers(0, 20)),
    st.tuples(st.just("decline"), st.integers(0, 20)),
    st.tuples(st.just("lose"), st.sampled_from(sorted(OWNERS))),
    st.tuples(st.just("withdraw"), st.sampled_from(["bob", "carol"]), st.integers(1, 30 * DGPU)),
    st.tuples(st.just("wait"), st.integers(1, 900)),
    st.tuples(
        st.just("budget"),
        st.sampled_from(RENTERS),
        st.sampled_from([None, 0, DGPU // 10, DGPU, 5 * DGPU]),
        st.sampled_from([None, DGPU, 20 * DGPU]),
    ),
)


def run(sim: Sim, op: tuple[Any, ...], ticks: dict[str, int]) -> None:
    kind = op[0]
    jobs = sorted(sim.world.jobs, key=lambda j: sim.world.jobs[j].submitted_seq)

    def pick(i: int) -> str | None:
        return jobs[int(i) % len(jobs)] if jobs else None

    if kind == "deposit":
        sim.deposit(str(op[1]), int(op[2]))
    elif kind == "register":
        pid, n, price = str(op[1]), int(op[2]), int(op[3])
        sim.command(
            "provider",
            OWNERS[pid],
            cmd.RegisterProvider(
                command_id="x" * 8,
                provider_id=pid,
                name=pid,
                payout_address=SOLANA,
                gpus=[gpu(i) for i in range(n)],
                offers=[GpuOffer(index=i, price=price) for i in range(n)],
            ),
        )
    elif kind == "submit":
        sim.command(
            "renter",
            str(op[1]),
            cmd.SubmitJob(
                command_id="x" * 8,
                requirements=JobRequirements(
                    gpu_count=int(op[2]),
                    max_duration_s=op[3],
                ),
                payload=ScriptPayload(script="x"),
            ),
        )
    elif kind in ("start", "tick", "finish", "decline"):
        job_id = pick(op[1])
        if job_id is None:
            return
        job = sim.world.job(job_id)
        if not job.provider_id:
            return
        owner = OWNERS[job.provider_id]
        ids: dict[str, Any] = {
            "provider_id": job.provider_id,
            "job_id": job_id,
            "attempt": job.attempt,
        }
        if kind == "start":
            sim.command("provider", owner, cmd.ReportJobStarted(command_id="x" * 8, **ids))
        elif kind == "decline":
            sim.command("provider", owner, cmd.DeclineAssignment(command_id="x" * 8, **ids))
        elif kind == "finish":
            sim.command(
                "provider",
                owner,
                cmd.ReportJobFinished(command_id="x" * 8, exit_code=int(op[2]), **ids),
            )
        else:
            seconds = int(op[2])
            sim.advance(seconds)
            key = f"{job_id}:{job.attempt}"
            ticks[key] = ticks.get(key, 0) + 1
            samples = [GpuSample(index=i, gpu_ms=seconds * 1000) for i in job.gpu_indices]
            sim.command(
                "provider",
                owner,
                cmd.RecordUsage(
                    command_id="x" * 8,
                    ticks=[UsageTick(seq=ticks[key], ended_at=sim.now, samples=samples)],
                    **ids,
                ),
            )
    elif kind == "cancel":
        job_id = pick(op[1])
        if job_id is not None:
            sim.command(
                "renter",
                sim.world.job(job_id).renter,
                cmd.CancelJob(command_id="x" * 8, job_id=job_id),
            )
    elif kind == "lose":
        provider = sim.world.provider(str(op[1]))
        if provider.online:
            sim.inject(
                ev.ProviderWentOffline(
                    event_id=f"lost-{provider.version}",
                    at=sim.now,
                    cause="test",
                    provider_id=provider.provider_id,
                )
            )
    elif kind == "withdraw":
        result = sim.command(
            "provider", str(op[1]), cmd.Withdraw(command_id="x" * 8, amount=int(op[2]))
        )
        assert not isinstance(result, Rejected) or result.code in ("invalid", "insufficient_funds")
    elif kind == "wait":
        sim.advance(int(op[1]))
        sim.tick()
    elif kind == "budget":
        daily, monthly = op[2], op[3]
        result = sim.command(
            "renter",
            str(op[1]),
            cmd.SetBudget(
                command_id="x" * 8,
                daily=daily,
                monthly=monthly,
                clear=daily is None and monthly is None,
            ),
        )
        assert not isinstance(result, Rejected) or result.code == "invalid"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, min_size=5, max_size=60))
def test_money_rules_hold_after_every_step(steps: list[tuple[Any, ...]]) -> None:
    sim = Sim()
    # An hour before a new day, month and year: budgets' periods roll over within a run.
    sim.now = datetime(2025, 12, 31, 23, tzinfo=UTC) + timedelta(minutes=30)
    ticks: dict[str, int] = {}
    prologue: list[tuple[Any, ...]] = [
        ("register", "prv-1", 2, DGPU // 2),
        ("register", "prv-2", 3, DGPU),
        ("register", "prv-3", 1, DGPU // 4),
        ("deposit", "alice", 30 * DGPU),
        ("deposit", "ann", DGPU // 5),
        ("submit", "alice", 1, None),
        ("submit", "ann", 1, None),
    ]
    for op in prologue + steps:
        run(sim, op, ticks)
        check_invariants(sim)
