"""GPUs: no GPU goes to two placed attempts at once; assignments match their reservation,
their provider's owner and the GPUs' listed price.

A GPU is held from the `GpusReserved` of an attempt until that attempt's `GpusReleased`
(a release by another attempt does not free it, as in the registry). Reserving it again for
another attempt is a double booking while the holder's attempt is still placed (assigned or
running); once the holder has ended, only its release is late, which is not two jobs at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dante.projections.audit.facts import Facts, Handler
from dante.projections.audit.report import Findings
from dante.schemas import events as ev
from dante.schemas.money import format_dgpu

GpuKey = tuple[str, int]  # (provider, GPU index)


@dataclass(frozen=True, slots=True)
class _Holder:
    job_id: str
    attempt: int
    seq: int


class GpuChecks:
    def __init__(self, facts: Facts, findings: Findings) -> None:
        self._facts = facts
        self._findings = findings
        self._held: dict[GpuKey, _Holder] = {}
        self._owners: dict[str, str] = {}
        #: Listed price of each offered GPU, per provider.
        self._prices: dict[str, dict[int, int]] = {}
        self._gpus: dict[str, frozenset[int]] = {}

    def handlers(self) -> Mapping[type[ev.Event], Handler]:
        return {
            ev.ProviderRegistered: self._registered,
            ev.OfferUpdated: self._offers,
            ev.GpusReserved: self._reserved,
            ev.GpusReleased: self._released,
            ev.JobAssigned: self._assigned,
        }

    def committed(self, seq: int) -> None:
        del seq

    def finish(self) -> None:
        return None

    def _registered(self, _seq: int, event: ev.ProviderRegistered) -> None:
        self._owners[event.provider_id] = event.owner
        indices = self._gpus[event.provider_id] = frozenset(gpu.index for gpu in event.gpus)
        self._prices[event.provider_id] = {
            offer.index: offer.price for offer in event.offers if offer.index in indices
        }

    def _offers(self, _seq: int, event: ev.OfferUpdated) -> None:
        prices = self._prices.setdefault(event.provider_id, {})
        known = self._gpus.get(event.provider_id, frozenset())
        for offer in event.offers:
            if offer.index in known:
                prices[offer.index] = offer.price

    def _still_placed(self, holder: _Holder) -> bool:
        attempt = self._facts.attempts.get((holder.job_id, holder.attempt))
        # A reservation no assignment followed still holds the GPU for the scheduler.
        return attempt is None or not attempt.ended

    def _reserved(self, seq: int, event: ev.GpusReserved) -> None:
        for index in event.gpu_indices:
            key = (event.provider_id, index)
            holder = self._held.get(key)
            if (
                holder is not None
                and (holder.job_id, holder.attempt) != (event.job_id, event.attempt)
                and self._still_placed(holder)
            ):
                self._findings.add(
                    "gpu_double_booked",
                    [holder.seq, seq],
                    f"GPU {index} of {event.provider_id} reserved at seq {seq} for attempt "
                    f"{event.attempt} of {event.job_id} while attempt {holder.attempt} of "
                    f"{holder.job_id} holds it (since seq {holder.seq})",
                    job_id=event.job_id,
                    attempt=event.attempt,
                    provider_id=event.provider_id,
                )
            self._held[key] = _Holder(event.job_id, event.attempt, seq)

    def _released(self, _seq: int, event: ev.GpusReleased) -> None:
        for index in event.gpu_indices:
            key = (event.provider_id, index)
            holder = self._held.get(key)
            if holder is not None and (holder.job_id, holder.attempt) == (
                event.job_id,
                event.attempt,
            ):
                del self._held[key]

    def _assigned(self, seq: int, event: ev.JobAssigned) -> None:
        ids: dict[str, Any] = {
            "job_id": event.job_id,
            "attempt": event.attempt,
            "provider_id": event.provider_id,
        }
        unreserved = [
            index
            for index in event.gpu_indices
            if (holder := self._held.get((event.provider_id, index))) is None
            or (holder.job_id, holder.attempt) != (event.job_id, event.attempt)
        ]
        if unreserved or not event.gpu_indices:
            self._findings.add(
                "assignment_gpus",
                [seq],
                f"assignment at seq {seq} names GPUs {unreserved or '(none)'} of "
                f"{event.provider_id}, which are not reserved for it",
                **ids,
            )
        owner = self._owners.get(event.provider_id)
        if owner != event.provider_owner:
            self._findings.add(
                "assignment_owner",
                [seq],
                f"assignment at seq {seq} pays {event.provider_owner}, but {event.provider_id} "
                f"was registered by {owner or 'nobody'}",
                **ids,
            )
        prices = self._prices.get(event.provider_id, {})
        listed = {prices.get(index) for index in event.gpu_indices}
        if listed - {event.price}:
            shown = ", ".join("unlisted" if p is None else format_dgpu(p) for p in listed)
            self._findings.add(
                "assignment_price",
                [seq],
                f"assignment at seq {seq} is at {format_dgpu(event.price)} dGPU/h; its GPUs "
                f"are listed at {shown}",
                **ids,
            )
        job = self._facts.jobs.get(event.job_id)
        cap = None if job is None else job.max_price
        if cap is not None and event.price > cap:
            self._findings.add(
                "assignment_price",
                [seq],
                f"assignment at seq {seq} is at {format_dgpu(event.price)} dGPU/h, above the "
                f"job's cap of {format_dgpu(cap)}",
                **ids,
            )
