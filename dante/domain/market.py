"""The market as the scheduler and the command service see it: slots of GPUs to place on."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from dante.domain import placement
from dante.domain.model import ProviderState, World
from dante.domain.model.market import provider_slots
from dante.domain.placement import ProviderSlots, explain_no_fit
from dante.domain.rejection import Rejected
from dante.domain.settings import Settings
from dante.schemas.money import cost
from dante.schemas.quotes import Placement
from dante.schemas.values import JobRequirements


def all_slots(
    world: World, providers: Iterable[ProviderState] | None = None
) -> list[ProviderSlots]:
    """Every registered (not deregistered) provider's slots."""
    if providers is None:
        return world.market.slots(world)
    return [
        provider_slots(p, world.reliability_ppm(p.provider_id))
        for p in providers
        if p.exists and p.status != "deregistered"
    ]


def place(world: World, req: JobRequirements) -> Placement | None:
    """The best placement now (`placement.place` over the world's market, stopping early)."""
    floors, slots = world.market.by_price(world, req.gpu_model)
    return placement.place(req, slots, floors=floors)


def hold_for(price: int, req: JobRequirements, settings: Settings) -> tuple[int, int]:
    """The first hold of a job at `price` per GPU-hour, and the seconds it covers."""
    seconds = req.max_duration_s or settings.hold_window_s
    return cost(price * req.gpu_count, seconds * 1000), seconds


@dataclass(frozen=True, slots=True)
class SubmissionCheck:
    #: The price per GPU-hour the first hold is figured at, and that hold. When the job can
    #: be placed now (`placement`), they are the offer the scheduler takes and exactly the
    #: `FundsHeld` it makes; otherwise the cheapest offer the job could ever get (offline or
    #: busy providers included), the least its first hold can be.
    price: int
    first_hold: int
    hold_seconds: int
    #: Where the job would be placed right now, if anywhere.
    placement: Placement | None

    @property
    def price_now(self) -> int | None:
        return None if self.placement is None else self.placement.price


def submission_check(world: World, req: JobRequirements, settings: Settings) -> SubmissionCheck:
    """Whether a job could ever run, where it would run now and what its first hold is.

    `Rejected` if it could never be placed. The hold quoted for a job that fits now is the
    one placement would take (`place`, the scheduler's own choice: online providers, free
    GPUs, under the price cap), never a cheaper offer of a provider that is offline or busy.
    """
    placement = place(world, req)
    if placement is not None:
        first_hold, seconds = hold_for(placement.price, req, settings)
        return SubmissionCheck(
            price=placement.price,
            first_hold=first_hold,
            hold_seconds=seconds,
            placement=placement,
        )
    ever = world.market.cheapest_ever(world, req)
    if ever is None:
        no_fit = explain_no_fit(req, all_slots(world))
        assert no_fit is not None  # nothing could ever fit, so something explains why
        if no_fit.code == "price_cap_too_low":
            raise Rejected("price_cap_too_low", no_fit.reason, "requirements.max_price")
        raise Rejected("no_matching_offer", no_fit.reason, "requirements")
    first_hold, seconds = hold_for(ever, req, settings)
    return SubmissionCheck(price=ever, first_hold=first_hold, hold_seconds=seconds, placement=None)
