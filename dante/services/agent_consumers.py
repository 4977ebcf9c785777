"""Every registered provider machine gets its dispatch consumer, made by the platform.

An agent reads its instructions through the durable pull consumer
`agent~<owner>~<provider_id>` on `DANTE_DISPATCH`, filtered to its own subjects. The
platform creates it, not the agent: whoever may create consumers may also send one's
deliveries to any subject of the account, the log's included. The agent only binds to it
(`js.pull_subscribe_bind(durable=..., stream=DANTE_DISPATCH)`), fetches and acknowledges,
which is all its permissions allow. Creating is idempotent, so every platform process may
do it, and a restart does it again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from dante.events.streams import ensure_agent_consumer
from dante.events.subjects import EVENT_PREFIX
from dante.schemas import events as ev

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

    from dante.events.store import EventStore

log = structlog.get_logger(__name__)


class AgentConsumers:
    def __init__(self, nc: NATS, store: EventStore) -> None:
        self._js = nc.jetstream()
        self._store = store
        self._made: set[tuple[str, str]] = set()

    async def run(self) -> None:
        """Follow provider registrations, from the start of the log, for ever."""
        async for recorded in self._store.read(
            1, follow=True, subjects=f"{EVENT_PREFIX}.provider.>"
        ):
            event = recorded.event
            if isinstance(event, ev.ProviderRegistered):
                await self.ensure(event.owner, event.provider_id)

    async def ensure(self, owner: str, provider_id: str) -> None:
        if (owner, provider_id) in self._made:
            return
        await ensure_agent_consumer(self._js, owner, provider_id)
        self._made.add((owner, provider_id))
        log.debug("dispatch.consumer_ready", owner=owner, provider_id=provider_id)
