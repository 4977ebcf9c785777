"""Holds: funds are held only for attempts that have not ended, and every ended attempt's hold
is consumed by charges or released.

Billing settles an attempt right after it ends (a last charge for unbilled usage, then the
release of what is left), so the end event and the settlement are different positions. A
hold still open at the end of the audited log for an attempt that ended less than
`settle_grace` before the last audited event is reported as pending, not as a violation.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from dante.projections.audit.facts import Facts, Handler
from dante.projections.audit.money import MoneyChecks
from dante.projections.audit.report import Findings, PendingSettlement
from dante.schemas import events as ev
from dante.schemas.money import format_dgpu


class HoldChecks:
    def __init__(
        self, facts: Facts, findings: Findings, money: MoneyChecks, settle_grace: timedelta
    ) -> None:
        self._facts = facts
        self._findings = findings
        self._money = money
        self._grace = settle_grace
        self.pending: list[PendingSettlement] = []
        #: When the last audited event happened.
        self.last_at: datetime | None = None

    def handlers(self) -> Mapping[type[ev.Event], Handler]:
        return {ev.FundsHeld: self._held}

    def committed(self, seq: int) -> None:
        del seq

    def _held(self, seq: int, event: ev.FundsHeld) -> None:
        attempt = self._facts.attempts.get((event.job_id, event.attempt))
        if attempt is not None and attempt.ended:
            self._findings.add(
                "hold_after_end",
                [attempt.ended_seq, seq],
                f"{format_dgpu(event.amount)} dGPU held at seq {seq} for an attempt that ended "
                f"at seq {attempt.ended_seq}",
                job_id=event.job_id,
                attempt=event.attempt,
                wallet_id=event.wallet_id,
            )

    def finish(self) -> None:
        for (wallet_id, job_id, number), amount in sorted(self._money.holds.items()):
            attempt = self._facts.attempts.get((job_id, number))
            if amount <= 0 or attempt is None or not attempt.ended:
                continue
            assert attempt.ended_at is not None
            if self.last_at is not None and self.last_at - attempt.ended_at <= self._grace:
                self.pending.append(
                    PendingSettlement(
                        job_id=job_id,
                        attempt=number,
                        wallet_id=wallet_id,
                        hold_udgpu=amount,
                        ended_seq=attempt.ended_seq,
                    )
                )
                continue
            last = self._money.hold_seq.get((wallet_id, job_id, number), attempt.ended_seq)
            self._findings.add(
                "hold_not_released",
                [attempt.ended_seq, last],
                f"{format_dgpu(amount)} dGPU is still held on {wallet_id}'s wallet for attempt "
                f"{number} of {job_id}, which ended at seq {attempt.ended_seq}",
                job_id=job_id,
                attempt=number,
                wallet_id=wallet_id,
            )
