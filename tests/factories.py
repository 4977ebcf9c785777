"""Small builders of valid events and values for tests."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any, TypeVar

from dante.domain.settings import Settings
from dante.schemas import events as ev
from dante.schemas.money import UDGPU_PER_DGPU
from dante.schemas.values import Gpu, GpuOffer, JobRequirements, ScriptPayload

E = TypeVar("E", bound=ev.Event)

_ids = itertools.count(1)
NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
SOLANA = "9xQeWvG816bUx9EPjHmaT23yvVM2ZWbrrpZb9PusVFin"


def make(cls: type[E], **fields: Any) -> E:
    fields.setdefault("event_id", f"test-{next(_ids)}")
    fields.setdefault("at", NOW)
    fields.setdefault("cause", "test")
    return cls(**fields)


#: A transaction signature (base58, 64 bytes).
SIGNATURE = "5" + "K" * 86


def deposit(wallet: str, dgpu: int, **fields: Any) -> ev.FundsDeposited:
    return make(ev.FundsDeposited, wallet_id=wallet, amount=dgpu * UDGPU_PER_DGPU, **fields)


def gpu(index: int = 0, model: str = "NVIDIA GeForce RTX 4090", vram_mb: int = 24564) -> Gpu:
    return Gpu(index=index, uuid=f"GPU-{index:08d}", vendor="nvidia", model=model, vram_mb=vram_mb)


def registered(provider_id: str = "prv-1", owner: str = "bob", n: int = 2) -> ev.ProviderRegistered:
    return make(
        ev.ProviderRegistered,
        provider_id=provider_id,
        owner=owner,
        name="box",
        payout_address=SOLANA,
        gpus=[gpu(i) for i in range(n)],
        offers=[GpuOffer(index=i, price=500_000) for i in range(n)],
    )


def submitted(job_id: str = "job-1", renter: str = "alice") -> ev.JobSubmitted:
    return make(
        ev.JobSubmitted,
        job_id=job_id,
        renter=renter,
        requirements=JobRequirements(gpu_count=1),
        payload=ScriptPayload(script="print('hi')"),
    )


def _tick(seq: int = 1) -> Any:
    from dante.schemas.values import GpuSample, UsageTick

    return UsageTick(
        seq=seq,
        ended_at=NOW,
        samples=[
            GpuSample(
                index=0,
                gpu_ms=10_000,
                utilization_pct=97,
                memory_used_mb=20_000,
                power_w=420,
                temperature_c=71,
            )
        ],
    )


def _result() -> Any:
    from dante.schemas.values import FileRef

    return FileRef(object="results/job-1/1.tar.gz", path="out", size=10, sha256="0" * 64)


def sample_events() -> list[ev.Event]:
    """One valid instance of every event type (a test checks none is missing)."""
    job = {"job_id": "job-1"}
    wallet = {"wallet_id": "alice"}
    charge = "chg-1"
    return [
        registered(),
        make(
            ev.OfferUpdated,
            provider_id="prv-1",
            offers=[GpuOffer(index=0, price=1, available=False)],
        ),
        make(ev.ProviderWentOffline, provider_id="prv-1", last_seen=NOW, reason="silent for 30s"),
        make(ev.ProviderCameOnline, provider_id="prv-1"),
        make(ev.ProviderDeregistered, provider_id="prv-1", reason="retired"),
        make(ev.GpusReserved, provider_id="prv-1", job_id="job-1", attempt=1, gpu_indices=[0, 1]),
        make(ev.GpusReleased, provider_id="prv-1", job_id="job-1", attempt=1, gpu_indices=[0, 1]),
        submitted(),
        make(ev.JobQueued, **job, code="insufficient_funds", reason="needs 5 dGPU"),
        make(
            ev.JobAssigned,
            **job,
            attempt=1,
            provider_id="prv-1",
            provider_owner="bob",
            gpu_indices=[0],
            price=500_000,
            fee_bps=500,
            hold=5_000_000,
        ),
        make(ev.JobAccepted, **job, attempt=1),
        make(ev.JobDeclined, **job, attempt=1, reason="busy"),
        make(ev.JobStarted, **job, attempt=1),
        make(ev.UsageRecorded, **job, attempt=1, ticks=[_tick(1), _tick(2)]),
        make(ev.JobCompleted, **job, attempt=1, exit_code=0, results=_result()),
        make(ev.JobFailed, **job, attempt=1, reason="exit code 3", exit_code=3),
        make(ev.JobCancelRequested, **job, by="alice"),
        make(ev.JobCancelled, **job, attempt=1, reason="by renter"),
        make(ev.JobStopped, **job, attempt=1, code="insufficient_funds"),
        make(ev.JobResultsStored, **job, attempt=1, results=_result()),
        make(ev.JobRequeued, **job, attempt=1, next_attempt=2, provider_id="prv-1"),
        make(ev.AccountOpened, **wallet, role="renter"),
        deposit("alice", 10),
        make(ev.FundsHeld, **wallet, job_id="job-1", attempt=1, amount=5_000_000),
        make(
            ev.FundsCharged,
            **wallet,
            job_id="job-1",
            attempt=1,
            amount=1388,
            usage_seq=14,
            total_gpu_ms=10_000,
            price=500_000,
            fee_bps=500,
            provider_wallet="bob",
            event_id=charge,
        ),
        make(
            ev.ProviderCredited,
            wallet_id="bob",
            job_id="job-1",
            attempt=1,
            amount=1319,
            charge_id=charge,
        ),
        make(
            ev.FeeCollected,
            wallet_id="platform",
            job_id="job-1",
            attempt=1,
            amount=69,
            charge_id=charge,
        ),
        make(ev.HoldReleased, **wallet, job_id="job-1", attempt=1, amount=4_998_612),
        make(
            ev.LowFundsWarned,
            **wallet,
            job_id="job-1",
            attempt=1,
            needed=5_000_000,
            available=10,
            stop_at=NOW,
        ),
        make(
            ev.LowFundsCleared,
            **wallet,
            job_id="job-1",
            attempt=1,
            reason="attempt 1 ended",
        ),
        make(ev.ChargeRefunded, **wallet, job_id="job-1", attempt=1, amount=1388),
        make(
            ev.CreditReversed,
            wallet_id="bob",
            job_id="job-1",
            attempt=1,
            amount=1319,
            refund_id="refund-1",
        ),
        make(ev.EarningsSettled, wallet_id="bob", job_id="job-1", attempt=1),
        make(ev.BudgetSet, **wallet, daily=2_000_000, monthly=None),
        make(
            ev.WithdrawalRequested,
            wallet_id="bob",
            withdrawal_id="wd-1",
            amount=10_000_000,
            payout_address=SOLANA,
        ),
        make(
            ev.FundsWithdrawn,
            wallet_id="bob",
            withdrawal_id="wd-1",
            amount=10_000_000,
            payout_address=SOLANA,
            reference="manual",
        ),
        make(
            ev.SettingsChanged,
            **{**Settings().as_fields(), "grace_s": 60},
            changed=["grace_s"],
            source="dante up --grace-s 60",
        ),
        make(
            ev.PayoutSigned,
            wallet_id="bob",
            withdrawal_id="wd-1",
            signature=SIGNATURE,
            transaction="AQID",
            last_valid_block_height=150,
            attempt=1,
        ),
        make(
            ev.WithdrawalFailed,
            wallet_id="bob",
            withdrawal_id="wd-2",
            amount=10_000_000,
            reason="invalid payout address",
        ),
        make(
            ev.PaymentCredited,
            signature=SIGNATURE,
            wallet_id="alice",
            amount=10_000_000,
            source_owner=SOLANA,
            slot=12,
        ),
    ]
