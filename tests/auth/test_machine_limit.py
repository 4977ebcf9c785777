"""One provider account cannot fill the market with machines: a per-account limit, settable
by the operator, and a refused registration appends nothing."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from dante.client.commands import Client, CommandError, new_command_id
from dante.domain.settings import Settings
from dante.schemas import commands as cmd
from dante.schemas import events as ev
from dante.schemas.values import GpuOffer
from tests.auth.conftest import Secured
from tests.factories import SOLANA, gpu

pytestmark = pytest.mark.anyio


def registration(provider_id: str) -> cmd.RegisterProvider:
    return cmd.RegisterProvider(
        command_id=new_command_id(),
        provider_id=provider_id,
        name=provider_id,
        payout_address=SOLANA,
        gpus=[gpu(0)],
        offers=[GpuOffer(index=0, price=1)],
    )


async def _provider(secured: Secured) -> Client:
    await secured.sign_up("mallory", "mallory-pass", "provider")
    nc = await secured.login("mallory", "mallory-pass", machine="fake-0")
    return Client(nc, "provider", "mallory", timeout=10, tries=1)


async def test_three_hundred_fake_machines_register_only_the_default_limit(
    secured: Secured,
) -> None:
    client = await _provider(secured)
    limit = secured.platform.options.settings.max_machines
    assert limit == 64
    outcomes: Counter[str] = Counter()

    async def register(n: int) -> None:
        try:
            await client.ask(registration(f"fake-{n}"))
            outcomes["ok"] += 1
        except CommandError as refused:
            outcomes[refused.code] += 1

    await asyncio.gather(*(register(n) for n in range(300)))
    await secured.platform.settle()
    assert outcomes["ok"] == limit
    assert set(outcomes) <= {"ok", "quota_exceeded", "rate_limited"}
    assert outcomes["quota_exceeded"] > 0
    registered = [
        r.event
        async for r in secured.platform.store.read()
        if isinstance(r.event, ev.ProviderRegistered)
    ]
    assert len(registered) == limit
    assert secured.platform.tail.world.machines("mallory") == limit
    await secured.audit_clean()


@pytest.mark.parametrize("settings", [Settings(max_machines=2)])
async def test_the_operator_sets_the_limit_and_a_refusal_appends_nothing(
    secured: Secured,
) -> None:
    client = await _provider(secured)
    await client.ask(registration("fake-1"))
    await client.ask(registration("fake-2"))
    # Registering one of its machines again (an agent restarting) is no new machine.
    await client.ask(registration("fake-2"))
    before = await secured.snapshot()
    with pytest.raises(CommandError) as refused:
        await client.ask(registration("fake-3"))
    assert refused.value.code == "quota_exceeded"
    assert "2 machines registered" in str(refused.value)
    assert await secured.snapshot() == before
    # A machine that leaves makes room for another.
    await client.ask(cmd.DeregisterProvider(command_id=new_command_id(), provider_id="fake-1"))
    await client.ask(registration("fake-3"))
    await secured.platform.settle()
    assert secured.platform.tail.world.machines_of["mallory"] == {"fake-2", "fake-3"}
