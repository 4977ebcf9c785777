"""The market index of a world: every provider's GPUs as slots to place on, ordered by
price, re-read only where the world changed. Part of the world's state (`World.market`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dante.domain.model.provider import ProviderState
from dante.domain.placement import GpuSlot, ProviderSlots, cheapest_price
from dante.domain.pricing import ModelPattern
from dante.schemas.values import JobRequirements

if TYPE_CHECKING:
    from dante.domain.model.world import World


def provider_slots(provider: ProviderState, reliability_ppm: int) -> ProviderSlots:
    gpus = tuple(
        GpuSlot(
            index=gpu.index,
            model=gpu.model,
            vram_mb=gpu.vram_mb,
            price=provider.offers[gpu.index].price if gpu.index in provider.offers else 0,
            free=provider.is_free(gpu.index),
        )
        for gpu in provider.gpus
        if gpu.index in provider.offers
    )
    return ProviderSlots(
        provider_id=provider.provider_id,
        owner=provider.owner,
        online=provider.online,
        reliability_ppm=reliability_ppm,
        location=provider.location,
        gpus=gpus,
    )


class Market:
    """The slots of a world's providers, kept up to date by re-reading only the providers
    whose state or reliability changed (the world touches them as it applies events), and
    ordered by each one's cheapest listed GPU for placements that stop early
    (`placement.place(..., floors=)`). The world owns it: `world.market`."""

    def __init__(self) -> None:
        #: Providers touched since the market last re-read them.
        self._changed: set[str] = set()
        self._slots: dict[str, ProviderSlots] = {}
        self._floor: dict[str, int] = {}
        self._by_price: tuple[list[int], list[ProviderSlots]] | None = None
        self._position: dict[str, int] = {}
        #: Per requested model: positions in the price order of providers with such a GPU.
        self._by_model: dict[str, list[int]] = {}
        #: The provider states last read, and a count of changes to what any provider offers
        #: (GPUs, offers, leaving): what a job could ever cost depends only on those.
        self._states: dict[str, ProviderState] = {}
        self._offers_changed = 0
        self._ever: dict[JobRequirements, int | None] = {}
        self._ever_at = 0
        self._seen_all = False

    def touch(self, provider_id: str) -> None:
        """The provider's state or reliability changed: re-read it before the next answer."""
        self._changed.add(provider_id)

    def refresh(self, world: World) -> None:
        changed = self._changed if self._seen_all else set(world.providers)
        if not changed:
            return
        for provider_id in changed:
            self._reread(world, provider_id)
        if self._by_price is not None:
            # Same order: swap in the changed providers' new slots.
            ordered = self._by_price[1]
            for provider_id in changed:
                if provider_id in self._slots:
                    ordered[self._position[provider_id]] = self._slots[provider_id]
        self._changed = set()
        self._seen_all = True

    def _reread(self, world: World, provider_id: str) -> None:
        provider = world.providers.get(provider_id)
        if _offer_changed(self._states.get(provider_id), provider):
            self._offers_changed += 1
        if provider is not None:
            self._states[provider_id] = provider
        if provider is None or not provider.exists or provider.status == "deregistered":
            if self._slots.pop(provider_id, None) is not None:
                self._floor.pop(provider_id, None)
                self._by_price = None
            return
        slots = provider_slots(provider, world.reliability_ppm(provider_id))
        floor = min((gpu.price for gpu in slots.gpus), default=0)
        if self._floor.get(provider_id) != floor:
            self._floor[provider_id] = floor
            self._by_price = None
        self._slots[provider_id] = slots

    def cheapest_ever(self, world: World, req: JobRequirements) -> int | None:
        """`cheapest_price(include_busy=True)`, remembered until what providers offer changes."""
        floors, slots = self.by_price(world, req.gpu_model)
        if self._ever_at != self._offers_changed:
            self._ever, self._ever_at = {}, self._offers_changed
        if req not in self._ever:
            self._ever[req] = cheapest_price(req, slots, include_busy=True, floors=floors)
        return self._ever[req]

    def slots(self, world: World) -> list[ProviderSlots]:
        """Every registered provider's slots, in the world's order."""
        self.refresh(world)
        return [self._slots[pid] for pid in world.providers if pid in self._slots]

    def by_price(
        self, world: World, model: str | None = None
    ) -> tuple[list[int], list[ProviderSlots]]:
        """Each provider's cheapest listed price, ascending, and its slots; with `model`,
        only providers with a GPU of that model (or family)."""
        self.refresh(world)
        if self._by_price is None:
            self._by_model.clear()
            order = sorted(self._slots, key=lambda pid: (self._floor[pid], pid))
            self._position = {pid: n for n, pid in enumerate(order)}
            self._by_price = (
                [self._floor[pid] for pid in order],
                [self._slots[pid] for pid in order],
            )
        floors, ordered = self._by_price
        if model is None:
            return floors, ordered
        positions = self._by_model.get(model)
        if positions is None:
            pattern = ModelPattern(model)
            seen: dict[str, bool] = {}

            def matches(name: str) -> bool:
                hit = seen.get(name)
                if hit is None:
                    hit = seen[name] = pattern.matches(name)
                return hit

            positions = [
                n for n, slots in enumerate(ordered) if any(matches(g.model) for g in slots.gpus)
            ]
            self._by_model[model] = positions
        return [floors[n] for n in positions], [ordered[n] for n in positions]


def _offer_changed(before: ProviderState | None, after: ProviderState | None) -> bool:
    """Whether what the provider offers (GPUs, prices, being registered) may have changed.

    States are immutable and an event replaces only the fields it changes, so unchanged
    GPUs and offers are the very same objects.
    """
    if before is None or after is None:
        return True
    if before.gpus is not after.gpus or before.offers is not after.offers:
        return True
    return before.status != after.status and "deregistered" in (before.status, after.status)
