"""Telling the platform this agent is alive: a `Heartbeat` in the KV bucket every few seconds.

Written as plain JetStream publishes to `$KV.dante_heartbeats.<owner>.<provider_id>` (what
nats-py's KV `put` and `delete` do underneath): the one subject nats-server lets the agent
write there, and no bucket lookup through the JetStream API, which it may not use. Each beat
goes on the connection of the moment (`js` is asked every time: the agent's `Link` replaces
a connection nats-py gave up on), and the first comes as soon as a new one is open.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

import anyio
import msgspec
import structlog

from dante import __version__
from dante.events.subjects import heartbeat_subject
from dante.schemas.dispatch import Heartbeat

if TYPE_CHECKING:
    from nats.js.client import JetStreamContext

log = structlog.get_logger(__name__)

INTERVAL_S: Final = 5.0
#: After a failed beat, the next one comes sooner: the connection may be back already.
RETRY_S: Final = 1.0


class Heartbeats:
    def __init__(
        self,
        js: Callable[[], JetStreamContext],
        owner: str,
        provider_id: str,
        running: Callable[[], list[str]],
        *,
        interval_s: float = INTERVAL_S,
        pause: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self._js = js
        self._pause = pause
        self._owner = owner
        self._provider_id = provider_id
        self._running = running
        self._interval = interval_s
        self._subject = heartbeat_subject(owner, provider_id)
        self.sent = 0
        self.failed = 0

    async def beat(self) -> None:
        beat = Heartbeat(
            provider_id=self._provider_id,
            owner=self._owner,
            at=datetime.now(UTC),
            running=self._running(),
            agent_version=__version__,
        )
        await self._js().publish(self._subject, msgspec.json.encode(beat), timeout=5)
        self.sent += 1
        log.debug("heartbeat sent", running=beat.running, beats=self.sent)

    async def run(self) -> None:
        """Beat every interval until cancelled; failures are logged and the next beat tried
        (at once when `pause` ends early: a new connection)."""
        failing = False
        while True:
            try:
                await self.beat()
            except Exception as exc:
                self.failed += 1
                if not failing:
                    log.warning("heartbeat failed", error=repr(exc))
                failing = True
            else:
                if failing:
                    log.info("heartbeat sent again")
                failing = False
            await self._pause(min(RETRY_S, self._interval) if failing else self._interval)

    async def clear(self) -> None:
        """Delete this agent's heartbeat key: it has stopped."""
        await self._js().publish(self._subject, b"", headers={"KV-Operation": "DEL"}, timeout=5)
