"""A platform in-process on a real nats-server, a provider simulated by its commands, and
the `dante` command line run as a real process against it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from nats.aio.client import Client as NATS

from dante.events.natsd import NatsServer
from dante.platform import Platform
from tests.cli.cli import Ran, run_dante
from tests.handlers.conftest import Clock
from tests.handlers.harness import Agent, running_platform


@pytest.fixture
def clock() -> Clock:
    return Clock()


@dataclass
class Market:
    """A running platform with one provider (bob's prov-1: two RTX 4090 at 0.5 dGPU/GPU-h)."""

    url: str
    nc: NATS
    platform: Platform
    clock: Clock
    agent: Agent
    #: The config folder the commands see (no stored logins).
    config: Path

    async def dante(
        self, *args: str, user: str | None = "alice", env: dict[str, str] | None = None
    ) -> Ran:
        """`dante ARGS` as a process, acting as `user`, without blocking the platform."""
        keypair = self.config / "solana" / f"{user or 'nobody'}.json"
        env = {"XDG_CONFIG_HOME": str(self.config), "SOLANA_KEYPAIR": str(keypair), **(env or {})}
        return await anyio.to_thread.run_sync(
            lambda: run_dante(*args, url=self.url, user=user, env=env)
        )


@pytest.fixture
async def market(
    nc: NATS, nats_server: NatsServer, tmp_path: Path, clock: Clock
) -> AsyncIterator[Market]:
    async with running_platform(nc, tmp_path, clock) as platform:
        agent = Agent(nc, "bob", "prov-1")
        await agent.register(2)
        yield Market(nats_server.url, nc, platform, clock, agent, tmp_path / "config")
