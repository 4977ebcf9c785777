"""Provider machines joining, changing their offer, and leaving."""

from __future__ import annotations

from dante.domain.deciders.context import Context
from dante.domain.decision import Decision
from dante.domain.model import ProviderState, World
from dante.domain.rejection import Rejected
from dante.schemas import commands as cmd
from dante.schemas import events as ev
from dante.schemas.results import ProviderResult
from dante.schemas.values import GpuOffer


def provider_result(provider: ProviderState) -> ProviderResult:
    return ProviderResult(provider_id=provider.provider_id, status=provider.status)


def owned_provider(world: World, ctx: Context, provider_id: str) -> ProviderState:
    """The provider, if it exists and belongs to the acting account."""
    provider = world.provider(provider_id)
    if not provider.exists:
        raise Rejected("unknown_provider", f"there is no provider {provider_id}", "provider_id")
    if provider.owner != ctx.identity:
        raise Rejected(
            "not_your_provider",
            f"provider {provider_id} belongs to another account",
            "provider_id",
        )
    return provider


def _check_offers(offers: list[GpuOffer], indices: set[int]) -> None:
    seen: set[int] = set()
    for n, offer in enumerate(offers):
        if offer.index not in indices:
            raise Rejected(
                "invalid",
                f"offer for GPU {offer.index}, which this provider does not have",
                f"offers[{n}].index",
            )
        if offer.index in seen:
            raise Rejected("invalid", f"two offers for GPU {offer.index}", f"offers[{n}].index")
        seen.add(offer.index)


def register(world: World, ctx: Context, command: cmd.RegisterProvider) -> Decision:
    provider = world.provider(command.provider_id)
    if provider.exists and provider.owner != ctx.identity:
        raise Rejected(
            "not_your_provider",
            f"provider id {command.provider_id} is taken by another account",
            "provider_id",
        )
    if not command.name.strip():
        raise Rejected("invalid", "a provider needs a name", "name")
    limit = ctx.settings.max_machines
    if provider.status in ("new", "deregistered") and world.machines(ctx.identity) >= limit:
        raise Rejected(
            "quota_exceeded",
            f"{ctx.identity} has {limit} machines registered, as many as one account may: "
            "deregister one first, or ask the operator to raise the limit",
            "provider_id",
        )
    indices: set[int] = set()
    uuids: set[str] = set()
    for n, gpu in enumerate(command.gpus):
        if gpu.index in indices:
            raise Rejected("invalid", f"two GPUs with index {gpu.index}", f"gpus[{n}].index")
        if gpu.uuid in uuids:
            raise Rejected("invalid", f"two GPUs with uuid {gpu.uuid}", f"gpus[{n}].uuid")
        indices.add(gpu.index)
        uuids.add(gpu.uuid)
    _check_offers(command.offers, indices)
    event = ev.ProviderRegistered(
        **ctx.envelope(),
        provider_id=command.provider_id,
        owner=ctx.identity,
        name=command.name,
        location=command.location,
        payout_address=command.payout_address,
        gpus=command.gpus,
        offers=command.offers,
        host=command.host,
        agent_version=command.agent_version,
    )
    pid = command.provider_id
    return Decision.on(provider.version, event, result=lambda w: provider_result(w.provider(pid)))


def update_offer(world: World, ctx: Context, command: cmd.UpdateOffer) -> Decision:
    provider = owned_provider(world, ctx, command.provider_id)
    if provider.status == "deregistered":
        raise Rejected(
            "wrong_state",
            f"provider {provider.provider_id} is deregistered; register it again",
            "provider_id",
        )
    _check_offers(command.offers, {g.index for g in provider.gpus})
    event = ev.OfferUpdated(
        **ctx.envelope(), provider_id=command.provider_id, offers=command.offers
    )
    pid = command.provider_id
    return Decision.on(provider.version, event, result=lambda w: provider_result(w.provider(pid)))


def deregister(world: World, ctx: Context, command: cmd.DeregisterProvider) -> Decision:
    provider = owned_provider(world, ctx, command.provider_id)
    pid = command.provider_id
    if provider.status == "deregistered":
        return Decision.nothing(result=lambda w: provider_result(w.provider(pid)))
    event = ev.ProviderDeregistered(**ctx.envelope(), provider_id=pid, reason=command.reason)
    return Decision.on(provider.version, event, result=lambda w: provider_result(w.provider(pid)))
