"""A provider machine: its GPUs, offers, status and which GPUs are reserved by which job."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec
from msgspec.structs import replace

from dante.schemas import events as ev
from dante.schemas.values import Gpu, GpuOffer

ProviderStatus = Literal["new", "online", "offline", "deregistered"]


class Reservation(msgspec.Struct, frozen=True, gc=False):
    job_id: str
    attempt: int


class ProviderState(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    provider_id: str
    #: Stream sequence of the provider's last event; 0 when it has none.
    version: int = 0
    owner: str = ""
    name: str = ""
    location: str = ""
    payout_address: str = ""
    host: str = ""
    gpus: tuple[Gpu, ...] = ()
    offers: dict[int, GpuOffer] = msgspec.field(default_factory=dict)
    status: ProviderStatus = "new"
    reservations: dict[int, Reservation] = msgspec.field(default_factory=dict)
    registered_at: datetime | None = None

    @property
    def exists(self) -> bool:
        return self.status != "new"

    @property
    def online(self) -> bool:
        return self.status == "online"

    @property
    def simulated(self) -> bool:
        return any(gpu.simulated for gpu in self.gpus)

    def gpu(self, index: int) -> Gpu | None:
        return next((g for g in self.gpus if g.index == index), None)

    def is_free(self, index: int) -> bool:
        """Offered, available, and not reserved by any job."""
        offer = self.offers.get(index)
        return (
            offer is not None
            and offer.available
            and index not in self.reservations
            and self.gpu(index) is not None
        )

    def reserved_by(self, job_id: str, attempt: int) -> list[int]:
        return sorted(i for i, r in self.reservations.items() if r == Reservation(job_id, attempt))


def evolve_provider(state: ProviderState, event: ev.Event, seq: int) -> ProviderState:
    """The provider after `event`, appended at stream sequence `seq`."""
    match event:
        case ev.ProviderRegistered():
            indices = {g.index for g in event.gpus}
            return replace(
                state,
                version=seq,
                owner=event.owner,
                name=event.name,
                location=event.location,
                payout_address=event.payout_address,
                host=event.host,
                gpus=tuple(event.gpus),
                offers={o.index: o for o in event.offers if o.index in indices},
                status="online",
                # Reservations survive a re-registration, even on a GPU the machine no
                # longer lists: the attempt holding it runs on (or is yet to be given back)
                # and releases it when it ends; a GPU that comes back meanwhile stays taken.
                reservations=state.reservations,
                registered_at=state.registered_at or event.at,
            )
        case ev.OfferUpdated():
            offers = dict(state.offers)
            known = {g.index for g in state.gpus}
            offers.update({o.index: o for o in event.offers if o.index in known})
            return replace(state, version=seq, offers=offers)
        case ev.ProviderWentOffline():
            return replace(state, version=seq, status="offline")
        case ev.ProviderCameOnline():
            return replace(state, version=seq, status="online")
        case ev.ProviderDeregistered():
            return replace(state, version=seq, status="deregistered")
        case ev.GpusReserved():
            reservations = dict(state.reservations)
            for index in event.gpu_indices:
                reservations[index] = Reservation(event.job_id, event.attempt)
            return replace(state, version=seq, reservations=reservations)
        case ev.GpusReleased():
            mine = Reservation(event.job_id, event.attempt)
            reservations = {
                i: r
                for i, r in state.reservations.items()
                if not (i in event.gpu_indices and r == mine)
            }
            return replace(state, version=seq, reservations=reservations)
        case _:
            raise TypeError(f"{type(event).__name__} is not a provider event")
