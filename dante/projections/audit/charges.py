"""Charges: every charge is its recorded usage at its attempt's price, split exactly, in time.

For a `FundsCharged` of a job attempt at a running total of `total_gpu_ms`:

- price and fee rate are those of the attempt's `JobAssigned`; the renter is the job's;
- `total_gpu_ms` is the attempt's recorded GPU time after the `UsageRecorded` it names
  (`usage_seq`), which is one of that attempt's, at or before the charge;
- `amount + uncovered = cost(price, total_gpu_ms) - cost(price, previous total)`;
- the next two messages of the same atomic batch are its `ProviderCredited` and its
  `FeeCollected`; the attempt's fees add up to `fee_of(charged total, fee_bps)`, the credit is
  the charge minus the fee and goes to the attempt's provider account;
- it comes after the attempt started; once the attempt has ended, only usage recorded before
  the end may still be charged (billing settles what was unbilled), and nothing once the
  attempt was lost to its provider;
- it bills `billable_gpu_ms` of the total: all of it, or after a cancel at most the time until
  the cancel plus the attempt's stop grace on each GPU;
- a lost attempt's refund is everything it was charged, and its reversals are the credit and
  the fee of those charges, in the refund's batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dante.projections.audit.facts import Attempt, Facts, Handler
from dante.projections.audit.report import Findings
from dante.schemas import events as ev
from dante.schemas.money import cost, fee_of
from dante.schemas.values import PLATFORM_WALLET


@dataclass(slots=True)
class _OpenCharge:
    """A charge whose batch has not ended yet: its credit and fee must follow in it."""

    seq: int
    batch_id: str | None
    job_id: str
    attempt: int
    amount: int
    credit_seq: int = 0
    credit: int = 0
    fee_seq: int = 0


class ChargeChecks:
    def __init__(self, facts: Facts, findings: Findings) -> None:
        self._facts = facts
        self._findings = findings
        self._open: dict[str, _OpenCharge] = {}
        #: The last refund seen: its id, sequence and attempt (its reversals follow it).
        self._refund: tuple[str, int, Attempt | None] = ("", 0, None)

    def handlers(self) -> Mapping[type[ev.Event], Handler]:
        return {
            ev.FundsCharged: self._charged,
            ev.ProviderCredited: self._credited,
            ev.FeeCollected: self._fee,
            ev.ChargeRefunded: self._refunded,
            ev.CreditReversed: self._reversed,
        }

    def _add(self, code: str, seqs: list[int], message: str, event: Any) -> None:
        self._findings.add(
            code,
            seqs,
            message,
            job_id=event.job_id,
            attempt=event.attempt,
            wallet_id=event.wallet_id,
        )

    # ── the charge ──────────────────────────────────────────────────────────────────────

    def _charged(self, seq: int, event: ev.FundsCharged) -> None:
        self._open[event.event_id] = _OpenCharge(
            seq=seq,
            batch_id=self._facts.batch_id,
            job_id=event.job_id,
            attempt=event.attempt,
            amount=event.amount,
        )
        attempt = self._facts.attempts.get((event.job_id, event.attempt))
        if attempt is None:
            self._add(
                "charge_price",
                [seq],
                f"charge at seq {seq} is for attempt {event.attempt} of {event.job_id}, "
                "which was never assigned (so it has no price)",
                event,
            )
            return
        self._check_terms(seq, event, attempt)
        self._check_timing(seq, event, attempt)
        self._check_usage(seq, event, attempt)
        billable = attempt.billable(event.total_gpu_ms)
        said = event.total_gpu_ms if event.billable_gpu_ms is None else event.billable_gpu_ms
        if said != billable:
            self._add(
                "charge_billable",
                [seq],
                f"charge at seq {seq} bills {said} of {event.total_gpu_ms} GPU-ms; after the "
                f"cancel and its stop grace {billable} GPU-ms are billable",
                event,
            )
        if attempt.lost:
            self._add(
                "charge_lost",
                [attempt.ended_seq, seq],
                f"charge at seq {seq} is for an attempt lost to its provider at seq "
                f"{attempt.ended_seq}, which costs nothing",
                event,
            )
        owed = cost(attempt.price, billable) - cost(attempt.price, attempt.billable_ms)
        if event.amount + event.uncovered != owed:
            self._add(
                "charge_amount",
                [seq],
                f"charge at seq {seq}: {event.amount} charged + {event.uncovered} uncovered "
                f"µdGPU, but {attempt.billed_ms} → {event.total_gpu_ms} GPU-ms at "
                f"{attempt.price} µdGPU/h costs {owed} µdGPU",
                event,
            )
        attempt.billed_ms = max(attempt.billed_ms, event.total_gpu_ms)
        attempt.billable_ms = max(attempt.billable_ms, billable)
        attempt.charged += event.amount

    def _check_terms(self, seq: int, event: ev.FundsCharged, attempt: Attempt) -> None:
        if event.wallet_id != attempt.renter:
            self._add(
                "charge_wallet",
                [attempt.assigned_seq, seq],
                f"charge at seq {seq} is taken from {event.wallet_id}, but the job is "
                f"{attempt.renter or 'nobody'}'s",
                event,
            )
        if (event.price, event.fee_bps) != (attempt.price, attempt.fee_bps):
            self._add(
                "charge_price",
                [attempt.assigned_seq, seq],
                f"charge at seq {seq} says {event.price} µdGPU/h and {event.fee_bps} bps; "
                f"the attempt was assigned at {attempt.price} µdGPU/h and "
                f"{attempt.fee_bps} bps (seq {attempt.assigned_seq})",
                event,
            )

    def _check_timing(self, seq: int, event: ev.FundsCharged, attempt: Attempt) -> None:
        if not attempt.started_seq:
            self._add(
                "charge_before_start",
                [attempt.assigned_seq, seq],
                f"charge at seq {seq} for an attempt that has not started",
                event,
            )
        elif attempt.ended and (
            event.usage_seq > attempt.ended_seq or event.total_gpu_ms > attempt.recorded_at_end
        ):
            self._add(
                "charge_after_end",
                [attempt.ended_seq, seq],
                f"charge at seq {seq} bills {event.total_gpu_ms} GPU-ms (usage seq "
                f"{event.usage_seq}); the attempt ended at seq {attempt.ended_seq} with "
                f"{attempt.recorded_at_end} GPU-ms recorded",
                event,
            )

    def _check_usage(self, seq: int, event: ev.FundsCharged, attempt: Attempt) -> None:
        usage = attempt.usage
        # Charges name ever later usage: what lies before the one named is never needed again.
        while usage and usage[0][0] < event.usage_seq:
            usage.popleft()
        if event.total_gpu_ms > attempt.recorded_ms:
            self._add(
                "charge_usage",
                [seq],
                f"charge at seq {seq} bills {event.total_gpu_ms} GPU-ms; only "
                f"{attempt.recorded_ms} GPU-ms were recorded",
                event,
            )
        elif not usage or usage[0][0] != event.usage_seq:
            self._add(
                "charge_usage",
                [seq],
                f"charge at seq {seq} names usage at seq {event.usage_seq}, which is not a "
                "usage record of this attempt",
                event,
            )
        elif usage[0][1] != event.total_gpu_ms:
            self._add(
                "charge_usage",
                [event.usage_seq, seq],
                f"charge at seq {seq} bills {event.total_gpu_ms} GPU-ms; the attempt had "
                f"{usage[0][1]} GPU-ms recorded at the usage it names (seq {event.usage_seq})",
                event,
            )

    # ── its credit and fee ──────────────────────────────────────────────────────────────

    def _in_batch(self, seq: int, event: Any, charge: _OpenCharge | None, place: int) -> bool:
        kind = type(event).__name__
        if charge is None:
            self._add(
                "charge_batch",
                [seq],
                f"{kind} at seq {seq} names charge {event.charge_id}, which is not in its batch",
                event,
            )
            return False
        batch = self._facts.batch_id
        if seq != charge.seq + place or batch is None or batch != charge.batch_id:
            self._add(
                "charge_batch",
                [charge.seq, seq],
                f"{kind} at seq {seq} should be message {place + 1} of the atomic batch of its "
                f"charge at seq {charge.seq}",
                event,
            )
        if (event.job_id, event.attempt) != (charge.job_id, charge.attempt):
            self._add(
                "charge_batch",
                [charge.seq, seq],
                f"{kind} at seq {seq} is for attempt {event.attempt} of {event.job_id}, its "
                f"charge for attempt {charge.attempt} of {charge.job_id}",
                event,
            )
        return True

    def _credited(self, seq: int, event: ev.ProviderCredited) -> None:
        charge = self._open.get(event.charge_id)
        if not self._in_batch(seq, event, charge, 1):
            return
        assert charge is not None
        charge.credit_seq, charge.credit = seq, event.amount
        attempt = self._facts.attempts.get((charge.job_id, charge.attempt))
        if attempt is not None and event.wallet_id != attempt.provider_owner:
            self._add(
                "credit_split",
                [attempt.assigned_seq, seq],
                f"credit at seq {seq} goes to {event.wallet_id}; the attempt ran for "
                f"{attempt.provider_owner}",
                event,
            )

    def _fee(self, seq: int, event: ev.FeeCollected) -> None:
        charge = self._open.get(event.charge_id)
        if not self._in_batch(seq, event, charge, 2):
            return
        assert charge is not None
        charge.fee_seq = seq
        if event.wallet_id != PLATFORM_WALLET:
            self._add(
                "fee_split",
                [charge.seq, seq],
                f"fee at seq {seq} goes to {event.wallet_id}, not to the platform",
                event,
            )
        if charge.credit_seq and charge.credit + event.amount != charge.amount:
            self._add(
                "credit_split",
                [charge.seq, charge.credit_seq, seq],
                f"credit {charge.credit} + fee {event.amount} µdGPU is not the charge "
                f"{charge.amount} µdGPU at seq {charge.seq}",
                event,
            )
        attempt = self._facts.attempts.get((charge.job_id, charge.attempt))
        if attempt is None:
            return
        attempt.fees += event.amount
        expected = fee_of(attempt.charged, attempt.fee_bps)
        if attempt.fees != expected:
            self._add(
                "fee_split",
                [charge.seq, seq],
                f"fees of the attempt total {attempt.fees} µdGPU after seq {seq}; "
                f"{attempt.fee_bps} bps of {attempt.charged} charged is {expected}",
                event,
            )

    # ── refunds of lost attempts ────────────────────────────────────────────────────────

    def _refunded(self, seq: int, event: ev.ChargeRefunded) -> None:
        attempt = self._facts.attempts.get((event.job_id, event.attempt))
        self._refund = (event.event_id, seq, attempt)
        if attempt is None or not attempt.lost or event.wallet_id != attempt.renter:
            self._add(
                "refund",
                [seq],
                f"refund at seq {seq} is for an attempt that was not lost to its provider, "
                "or goes to someone other than its renter",
                event,
            )
            return
        if event.amount != attempt.charged - attempt.refunded:
            self._add(
                "refund",
                [seq],
                f"refund at seq {seq} gives back {event.amount} µdGPU; the attempt was "
                f"charged {attempt.charged - attempt.refunded} µdGPU",
                event,
            )
        attempt.refunded += event.amount

    def _reversed(self, seq: int, event: ev.CreditReversed) -> None:
        refund_id, refund_seq, attempt = self._refund
        if refund_id != event.refund_id or attempt is None:
            self._add(
                "refund",
                [seq],
                f"reversal at seq {seq} names refund {event.refund_id}, not the one before it",
                event,
            )
            return
        credit = attempt.charged - attempt.fees
        expected = attempt.fees if event.wallet_id == PLATFORM_WALLET else credit
        if event.wallet_id not in (PLATFORM_WALLET, attempt.provider_owner) or (
            event.amount != expected
        ):
            self._add(
                "refund",
                [refund_seq, seq],
                f"reversal at seq {seq} takes {event.amount} µdGPU from {event.wallet_id}; "
                f"the attempt credited {credit} to {attempt.provider_owner} and "
                f"{attempt.fees} to the platform",
                event,
            )

    # ── where batches end ───────────────────────────────────────────────────────────────

    def committed(self, seq: int) -> None:
        if not self._open:
            return
        for charge_id, charge in self._open.items():
            missing = [
                name
                for name, at in (
                    ("ProviderCredited", charge.credit_seq),
                    ("FeeCollected", charge.fee_seq),
                )
                if not at
            ]
            if missing:
                self._findings.add(
                    "charge_batch",
                    [charge.seq, seq],
                    f"charge {charge_id} at seq {charge.seq} has no {' or '.join(missing)} in "
                    f"its batch (which ended at seq {seq})",
                    job_id=charge.job_id,
                    attempt=charge.attempt,
                )
        self._open = {}

    def finish(self) -> None:
        self.committed(self._facts.seq)
