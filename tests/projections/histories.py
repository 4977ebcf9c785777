"""Random, valid-shaped histories of the marketplace for property tests.

Hypothesis draws a list of steps (an action and two numbers); `History.play` turns them into
the events the platform would append for them, in batches (what one decision appends
atomically). Steps that make no sense at that point (usage for a job that is not running)
append nothing, so any list of steps gives a valid history and shrinking works well.
Money moves are balanced like billing's: a charge is split into a credit and a fee.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from hypothesis import strategies as st

from dante.schemas import events as ev
from dante.schemas.money import UDGPU_PER_DGPU, cost, fee_of
from dante.schemas.values import (
    DockerPayload,
    FileRef,
    Gpu,
    GpuOffer,
    GpuSample,
    JobRequirements,
    ScriptPayload,
    UsageTick,
)

RENTERS: Final = ("alice", "carol", "dave")
OWNERS: Final = ("bob", "erin")
PROVIDERS: Final = ("prv-0", "prv-1", "prv-2")
MODELS: Final = (
    ("NVIDIA GeForce RTX 4090", 24564),
    ("NVIDIA H100 80GB HBM3", 81559),
    ("AMD Radeon RX 7900 XTX", 24560),
)
SOLANA: Final = "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin"
START: Final = datetime(2026, 1, 1, tzinfo=UTC)
FEE_BPS: Final = 500

ACTIONS: Final = (
    "open",
    "deposit",
    "register",
    "offer",
    "offline",
    "online",
    "deregister",
    "submit",
    "submit",
    "assign",
    "assign",
    "accept",
    "decline",
    "start",
    "start",
    "usage",
    "usage",
    "usage",
    "usage",
    "usage",
    "end",
    "end",
    "cancel_request",
    "lose",
    "withdraw",
    "payout",
)

Decision = tuple[str, int, int]

steps = st.lists(
    st.tuples(st.sampled_from(ACTIONS), st.integers(0, 2**16), st.integers(0, 2**16)),
    min_size=30,
    max_size=120,
)

#: Every history starts here: accounts with money, and two providers with free GPUs.
SETUP: Final[list[Decision]] = [
    ("open", 0, 0),
    ("open", 3, 0),
    ("deposit", 0, 40),
    ("deposit", 1, 20),
    ("register", 0, 3),
    ("register", 1, 2),
]


@dataclass
class _Provider:
    owner: str
    status: str = "online"
    #: index -> (price, available) for offered GPUs; every GPU index it has.
    gpus: set[int] = field(default_factory=set)
    offers: dict[int, tuple[int, bool]] = field(default_factory=dict)
    busy: dict[int, tuple[str, int]] = field(default_factory=dict)


@dataclass
class _Job:
    renter: str
    gpu_count: int
    state: str = "queued"
    attempt: int = 0
    provider: str = ""
    gpus: list[int] = field(default_factory=list)
    price: int = 0
    hold: int = 0
    gpu_ms: int = 0
    charged: int = 0
    fees: int = 0
    ticks: int = 0


@dataclass
class History:
    """The generator's own picture of the world, and the batches it appended so far."""

    prefix: str = "h"
    at: datetime = START
    batches: list[list[ev.Event]] = field(default_factory=list)
    available: dict[str, int] = field(default_factory=dict)
    providers: dict[str, _Provider] = field(default_factory=dict)
    jobs: dict[str, _Job] = field(default_factory=dict)
    withdrawals: list[tuple[str, str, int]] = field(default_factory=list)
    _n: int = 0

    @property
    def events(self) -> list[ev.Event]:
        return [event for batch in self.batches for event in batch]

    def _make(self, cls: type[Any], **fields: Any) -> Any:
        self._n += 1
        return cls(event_id=f"{self.prefix}-{self._n}", at=self.at, cause="test", **fields)

    def _emit(self, *events: ev.Event) -> None:
        if events:
            self.batches.append(list(events))

    def play(self, drawn: list[Decision], *, setup: bool = True) -> History:
        for action, a, b in [*SETUP, *drawn] if setup else drawn:
            # Strictly increasing time between decisions; a decision's events share it.
            self.at += timedelta(seconds=1 + a % 600)
            getattr(self, f"_{action}")(a, b)
        return self

    # ── wallets ─────────────────────────────────────────────────────────────────────────

    def _open(self, a: int, _b: int) -> None:
        accounts = RENTERS + OWNERS
        account = accounts[a % len(accounts)]
        role = "renter" if account in RENTERS else "provider"
        self._emit(self._make(ev.AccountOpened, wallet_id=account, role=role))

    def _deposit(self, a: int, b: int) -> None:
        accounts = RENTERS + OWNERS
        wallet = accounts[a % len(accounts)]
        amount = (1 + b % 50) * UDGPU_PER_DGPU // 10 // (1 + a % 3)
        self.available[wallet] = self.available.get(wallet, 0) + amount
        self._emit(self._make(ev.FundsDeposited, wallet_id=wallet, amount=amount, reference=""))

    def _withdraw(self, a: int, b: int) -> None:
        candidates = sorted(w for w, amount in self.available.items() if amount > 0)
        if not candidates:
            return
        wallet = candidates[a % len(candidates)]
        amount = 1 + b % self.available[wallet]
        self.available[wallet] -= amount
        withdrawal = f"wd-{self._n}"
        self.withdrawals.append((wallet, withdrawal, amount))
        self._emit(
            self._make(
                ev.WithdrawalRequested,
                wallet_id=wallet,
                withdrawal_id=withdrawal,
                amount=amount,
                payout_address=SOLANA,
            )
        )

    def _payout(self, a: int, _b: int) -> None:
        if not self.withdrawals:
            return
        wallet, withdrawal, amount = self.withdrawals.pop(a % len(self.withdrawals))
        self._emit(
            self._make(
                ev.FundsWithdrawn,
                wallet_id=wallet,
                withdrawal_id=withdrawal,
                amount=amount,
                payout_address=SOLANA,
            )
        )

    # ── providers ───────────────────────────────────────────────────────────────────────

    def _register(self, a: int, b: int) -> None:
        pid = PROVIDERS[a % len(PROVIDERS)]
        owner = OWNERS[b % len(OWNERS)]
        previous = self.providers.get(pid)
        count = 1 + b % 4
        model, vram = MODELS[(a // 3) % len(MODELS)]
        gpus = [
            Gpu(
                index=i,
                uuid=f"GPU-{pid}-{i}",
                vendor="nvidia",
                model=model,
                vram_mb=vram,
                simulated=i == 3,
            )
            for i in range(count)
        ]
        # Every GPU but (sometimes) the last is offered.
        offered = range(count - 1 if b % 5 == 0 and count > 1 else count)
        offers = [
            GpuOffer(index=i, price=100_000 * (1 + (a + i) % 20), available=(a + i) % 7 != 0)
            for i in offered
        ]
        state = _Provider(owner=previous.owner if previous else owner)
        state.gpus = set(range(count))
        state.offers = {o.index: (o.price, o.available) for o in offers}
        if previous is not None:
            state.busy = {i: held for i, held in previous.busy.items() if i < count}
        self.providers[pid] = state
        self._emit(
            self._make(
                ev.ProviderRegistered,
                provider_id=pid,
                owner=state.owner,
                name=f"box {pid}",
                location=("Berlin, DE", "Lyon, FR", "Austin, US")[b % 3],
                payout_address=SOLANA,
                gpus=gpus,
                offers=offers,
                host=f"{pid}.local",
                agent_version="0.1.0",
            )
        )

    def _provider(self, a: int, status: str | None = None) -> tuple[str, _Provider] | None:
        found = sorted(
            (pid, p) for pid, p in self.providers.items() if status is None or p.status == status
        )
        return found[a % len(found)] if found else None

    def _offer(self, a: int, b: int) -> None:
        found = self._provider(a)
        if found is None:
            return
        pid, state = found
        offers = [
            GpuOffer(index=i, price=50_000 * (1 + (b + i) % 30), available=(b + i) % 4 != 0)
            for i in sorted(state.gpus)
            if (b >> i) & 1
        ]
        if not offers:
            return
        state.offers.update({o.index: (o.price, o.available) for o in offers})
        self._emit(self._make(ev.OfferUpdated, provider_id=pid, offers=offers))

    def _offline(self, a: int, _b: int) -> None:
        found = self._provider(a, "online")
        if found is None:
            return
        pid, state = found
        state.status = "offline"
        self._emit(
            self._make(ev.ProviderWentOffline, provider_id=pid, last_seen=self.at, reason="silent")
        )
        for job_id, job in sorted(self.jobs.items()):
            if job.provider == pid and job.state in ("assigned", "running"):
                self._requeue(job_id, job, "provider offline")

    def _online(self, a: int, _b: int) -> None:
        found = self._provider(a, "offline")
        if found is None:
            return
        found[1].status = "online"
        self._emit(self._make(ev.ProviderCameOnline, provider_id=found[0]))

    def _deregister(self, a: int, _b: int) -> None:
        found = self._provider(a)
        if found is None or found[1].busy:
            return
        found[1].status = "deregistered"
        self._emit(self._make(ev.ProviderDeregistered, provider_id=found[0], reason="retired"))

    # ── jobs ────────────────────────────────────────────────────────────────────────────

    def _submit(self, a: int, b: int) -> None:
        job_id = f"job-{len(self.jobs)}"
        renter = RENTERS[a % len(RENTERS)]
        gpu_count = 1 + b % 2
        self.jobs[job_id] = _Job(renter=renter, gpu_count=gpu_count)
        payload = (
            DockerPayload(image="ghcr.io/acme/train:1", command=["python", "train.py"])
            if a % 2
            else ScriptPayload(script="print('hi')", interpreter="python3")
        )
        self._emit(
            self._make(
                ev.JobSubmitted,
                job_id=job_id,
                renter=renter,
                name=f"run {job_id}",
                requirements=JobRequirements(
                    gpu_count=gpu_count, max_price=None if b % 3 else 5_000_000
                ),
                payload=payload,
            )
        )

    def _job(self, a: int, *states: str) -> tuple[str, _Job] | None:
        found = sorted((jid, j) for jid, j in self.jobs.items() if j.state in states)
        return found[a % len(found)] if found else None

    def _free(self, state: _Provider) -> list[int]:
        return [
            i
            for i in sorted(state.gpus)
            if state.offers.get(i, (0, False))[1] and i not in state.busy
        ]

    def _assign(self, a: int, b: int) -> None:
        found = self._job(a, "queued")
        if found is None:
            return
        job_id, job = found
        places = [
            (pid, p)
            for pid, p in sorted(self.providers.items())
            if p.status == "online" and len(self._free(p)) >= job.gpu_count
        ]
        if not places:
            self._emit(self._make(ev.JobQueued, job_id=job_id, code="no_capacity"))
            return
        pid, state = places[b % len(places)]
        gpus = self._free(state)[: job.gpu_count]
        price = max(state.offers[i][0] for i in gpus)
        hold = cost(price, 30_000 * job.gpu_count) + 1
        if self.available.get(job.renter, 0) < hold:
            self._emit(
                self._make(
                    ev.JobQueued, job_id=job_id, code="insufficient_funds", reason="needs funds"
                )
            )
            return
        job.attempt += 1
        job.state, job.provider, job.gpus, job.price = "assigned", pid, gpus, price
        job.hold, job.charged, job.fees, job.ticks = hold, 0, 0, 0
        job.gpu_ms = 0
        for i in gpus:
            state.busy[i] = (job_id, job.attempt)
        self.available[job.renter] -= hold
        self._emit(
            self._make(
                ev.JobAssigned,
                job_id=job_id,
                attempt=job.attempt,
                provider_id=pid,
                provider_owner=state.owner,
                gpu_indices=gpus,
                price=price,
                fee_bps=FEE_BPS,
                hold=hold,
            ),
            self._make(
                ev.GpusReserved,
                provider_id=pid,
                job_id=job_id,
                attempt=job.attempt,
                gpu_indices=gpus,
            ),
            self._make(
                ev.FundsHeld,
                wallet_id=job.renter,
                job_id=job_id,
                attempt=job.attempt,
                amount=hold,
            ),
        )

    def _accept(self, a: int, _b: int) -> None:
        found = self._job(a, "assigned")
        if found is not None:
            self._emit(self._make(ev.JobAccepted, job_id=found[0], attempt=found[1].attempt))

    def _start(self, a: int, _b: int) -> None:
        found = self._job(a, "assigned")
        if found is None:
            return
        found[1].state = "running"
        self._emit(self._make(ev.JobStarted, job_id=found[0], attempt=found[1].attempt))

    def _release(self, job_id: str, job: _Job, reason: str) -> list[ev.Event]:
        """Free the attempt's GPUs and the rest of its hold."""
        state = self.providers[job.provider]
        for i in job.gpus:
            if state.busy.get(i) == (job_id, job.attempt):
                del state.busy[i]
        events: list[ev.Event] = [
            self._make(
                ev.GpusReleased,
                provider_id=job.provider,
                job_id=job_id,
                attempt=job.attempt,
                gpu_indices=job.gpus,
                reason=reason,
            )
        ]
        if job.hold > 0:
            events.append(
                self._make(
                    ev.HoldReleased,
                    wallet_id=job.renter,
                    job_id=job_id,
                    attempt=job.attempt,
                    amount=job.hold,
                    reason=reason,
                )
            )
            self.available[job.renter] = self.available.get(job.renter, 0) + job.hold
            job.hold = 0
        return events

    def _requeue(self, job_id: str, job: _Job, reason: str) -> None:
        released = self._release(job_id, job, reason)
        requeued = self._make(
            ev.JobRequeued,
            job_id=job_id,
            attempt=job.attempt,
            next_attempt=job.attempt + 1,
            provider_id=job.provider,
            reason=reason,
        )
        job.state, job.provider, job.gpus = "queued", "", []
        self._emit(requeued, *released)

    def _decline(self, a: int, _b: int) -> None:
        found = self._job(a, "assigned")
        if found is None:
            return
        job_id, job = found
        self._emit(self._make(ev.JobDeclined, job_id=job_id, attempt=job.attempt, reason="busy"))
        self._requeue(job_id, job, "declined")

    def _lose(self, a: int, _b: int) -> None:
        found = self._job(a, "assigned")
        if found is not None:
            self._requeue(found[0], found[1], "not started in time")

    def _usage(self, a: int, b: int) -> None:
        found = self._job(a, "running")
        if found is None:
            return
        job_id, job = found
        ms = 1_000 + (b % 120) * 1_000
        job.ticks += 1
        tick = UsageTick(
            seq=job.ticks,
            ended_at=self.at,
            samples=[GpuSample(index=i, gpu_ms=ms, utilization_pct=90) for i in job.gpus],
        )
        self._emit(self._make(ev.UsageRecorded, job_id=job_id, attempt=job.attempt, ticks=[tick]))
        job.gpu_ms += ms * len(job.gpus)
        amount = cost(job.price, job.gpu_ms) - job.charged
        if amount > job.hold:
            top_up = amount - job.hold + cost(job.price, 1_800_000 * len(job.gpus))
            if self.available.get(job.renter, 0) >= top_up:
                self.available[job.renter] -= top_up
                job.hold += top_up
                self._emit(
                    self._make(
                        ev.FundsHeld,
                        wallet_id=job.renter,
                        job_id=job_id,
                        attempt=job.attempt,
                        amount=top_up,
                    )
                )
            else:
                self._emit(
                    self._make(
                        ev.LowFundsWarned,
                        wallet_id=job.renter,
                        job_id=job_id,
                        attempt=job.attempt,
                        needed=top_up,
                        available=self.available.get(job.renter, 0),
                        stop_at=self.at + timedelta(minutes=5),
                    )
                )
                amount = job.hold
        if amount <= 0:
            return
        job.charged += amount
        job.hold -= amount
        fee = fee_of(job.charged, FEE_BPS) - job.fees
        job.fees += fee
        owner = self.providers[job.provider].owner
        self.available[owner] = self.available.get(owner, 0) + amount - fee
        self.available["platform"] = self.available.get("platform", 0) + fee
        charge = self._make(
            ev.FundsCharged,
            wallet_id=job.renter,
            job_id=job_id,
            attempt=job.attempt,
            amount=amount,
            usage_seq=0,
            total_gpu_ms=job.gpu_ms,
            price=job.price,
            fee_bps=FEE_BPS,
            provider_wallet=owner,
        )
        self._emit(
            charge,
            self._make(
                ev.ProviderCredited,
                wallet_id=owner,
                job_id=job_id,
                attempt=job.attempt,
                amount=amount - fee,
                charge_id=charge.event_id,
            ),
            self._make(
                ev.FeeCollected,
                wallet_id="platform",
                job_id=job_id,
                attempt=job.attempt,
                amount=fee,
                charge_id=charge.event_id,
            ),
        )

    def _end(self, a: int, b: int) -> None:
        found = self._job(a, "running", "assigned")
        if found is None:
            return
        job_id, job = found
        results = FileRef(
            object=f"results/{job_id}/{job.attempt}.tar.gz", path="out", size=b, sha256="0" * 64
        )
        kind = ("completed", "failed", "cancelled", "stopped")[b % 4]
        if job.state == "assigned" and kind == "completed":
            kind = "cancelled"
        ended: ev.Event
        if kind == "completed":
            ended = self._make(
                ev.JobCompleted, job_id=job_id, attempt=job.attempt, exit_code=0, results=results
            )
        elif kind == "failed":
            ended = self._make(
                ev.JobFailed, job_id=job_id, attempt=job.attempt, reason="exit 3", exit_code=3
            )
        elif kind == "cancelled":
            ended = self._make(ev.JobCancelled, job_id=job_id, attempt=job.attempt, reason="asked")
        else:
            ended = self._make(
                ev.JobStopped, job_id=job_id, attempt=job.attempt, code="insufficient_funds"
            )
        released = self._release(job_id, job, kind)
        job.state = kind
        self._emit(ended, *released)
        if kind in ("stopped", "cancelled") and b % 2:
            self._emit(
                self._make(ev.JobResultsStored, job_id=job_id, attempt=job.attempt, results=results)
            )

    def _cancel_request(self, a: int, _b: int) -> None:
        found = self._job(a, "queued", "assigned", "running")
        if found is not None:
            job = found[1]
            self._emit(self._make(ev.JobCancelRequested, job_id=found[0], by=job.renter))
