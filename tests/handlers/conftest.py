from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from dante.chain.local import LocalChain
from dante.client.commands import Client
from dante.events.store import EventStore
from dante.schemas.commands import Role
from dante.services.chain import ChainQueries
from dante.services.commands import CommandService


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def chain(tmp_path: Path) -> LocalChain:
    """The local chain the command service verifies deposits against."""
    return LocalChain(tmp_path / "chain")


@pytest.fixture
async def service(
    nc: NATS, store: EventStore, clock: Clock, chain: LocalChain
) -> AsyncIterator[CommandService]:
    svc = CommandService(nc, store, clock=clock, chain=chain, extensions=[ChainQueries(chain)])
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()


@pytest.fixture
def as_(nc: NATS, service: CommandService):
    """`as_("renter", "alice")` gives a client acting as that identity."""

    def make(role: Role, identity: str) -> Client:
        return Client(nc, role, identity, timeout=5)

    return make
