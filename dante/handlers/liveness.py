"""Liveness: a provider whose agent stops heartbeating goes offline; a heartbeat brings it back.

Agents write a heartbeat every few seconds to the `dante_heartbeats` KV bucket. We watch the
bucket, so each heartbeat costs one update of a deadline (O(changes)), and a heap of
deadlines tells in O(log n) which providers fell silent; we never scan every provider.
`ProviderWentOffline` makes the scheduler requeue the provider's jobs.
"""

from __future__ import annotations

import contextlib
import heapq
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final

import msgspec
import structlog

from dante.events.codec import Recorded
from dante.events.store import Append
from dante.events.streams import HEARTBEAT_BUCKET, heartbeat_key
from dante.handlers.model import World
from dante.handlers.runner import Step, StepExecutor, utcnow
from dante.handlers.settings import Settings
from dante.schemas import events as ev
from dante.schemas.dispatch import Heartbeat

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

log = structlog.get_logger(__name__)

NAME: Final = "liveness"
_heartbeat: Final = msgspec.json.Decoder(Heartbeat)


class Liveness:
    name = NAME

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self._silence = timedelta(seconds=self.settings.offline_after_s)
        self.last_seen: dict[str, datetime] = {}
        self._deadlines: list[tuple[datetime, str]] = []
        self._seeded = False

    def _expect(self, provider_id: str, seen: datetime) -> None:
        self.last_seen[provider_id] = seen
        heapq.heappush(self._deadlines, (seen + self._silence, provider_id))

    def heartbeat(self, world: World, provider_id: str, now: datetime) -> Iterator[Step]:
        self._expect(provider_id, now)
        provider = world.provider(provider_id)
        if provider.status == "offline":
            event = ev.ProviderCameOnline(
                event_id=f"{NAME}:online:{provider_id}:{provider.version}",
                at=now,
                cause=f"seq:{provider.version}",
                provider_id=provider_id,
            )
            yield Step(appends=[Append(event=event, expected=provider.version)])

    def decide(self, world: World, recorded: Recorded, now: datetime) -> Iterator[Step]:
        del world
        event = recorded.event
        # A provider that joins and never heartbeats is offline after the same silence.
        if (
            isinstance(event, ev.ProviderRegistered | ev.ProviderCameOnline)
            and event.provider_id not in self.last_seen
        ):
            self._expect(event.provider_id, now)
        return iter(())

    def due(self, world: World, now: datetime) -> Iterator[Step]:
        if not self._seeded:
            self._seeded = True
            for provider in world.providers.values():
                if provider.online and provider.provider_id not in self.last_seen:
                    self._expect(provider.provider_id, now)
        while self._deadlines and self._deadlines[0][0] <= now:
            _, provider_id = heapq.heappop(self._deadlines)
            seen = self.last_seen.get(provider_id)
            if seen is None or seen + self._silence > now:
                continue  # heard from since: a newer deadline is in the heap
            provider = world.provider(provider_id)
            if not provider.online:
                continue
            event = ev.ProviderWentOffline(
                event_id=f"{NAME}:offline:{provider_id}:{provider.version}",
                at=now,
                cause=f"timer:{NAME}",
                provider_id=provider_id,
                last_seen=seen,
                reason=f"no heartbeat for {self.settings.offline_after_s}s",
            )
            yield Step(appends=[Append(event=event, expected=provider.version)])


async def watch_heartbeats(
    nc: NATS,
    executor: StepExecutor,
    liveness: Liveness,
    *,
    clock: Callable[[], datetime] = utcnow,
) -> None:
    """Feed every heartbeat written to the KV bucket into `liveness`."""
    kv = await nc.jetstream().key_value(HEARTBEAT_BUCKET)
    watcher = await kv.watchall(include_history=False)
    try:
        async for entry in watcher:
            if entry is None or entry.value is None or entry.operation is not None:
                continue  # end of the initial values, or a delete/purge
            try:
                beat = _heartbeat.decode(entry.value)
            except msgspec.DecodeError:
                log.warning("liveness.bad_heartbeat", key=entry.key)
                continue
            if heartbeat_key(beat.owner, beat.provider_id) != entry.key:
                log.warning("liveness.mismatched_heartbeat", key=entry.key)
                continue
            provider_id = beat.provider_id

            def decide(pid: str = provider_id) -> Iterator[Step]:
                return liveness.heartbeat(executor.world, pid, clock())

            await executor.carry_out(decide)
    finally:
        with contextlib.suppress(Exception):
            await watcher.stop()  # type: ignore[no-untyped-call]
