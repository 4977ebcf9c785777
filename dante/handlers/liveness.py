"""Liveness: a provider whose agent stops heartbeating goes offline; a heartbeat brings it back.

Agents write a heartbeat every few seconds to the `dante_heartbeats` KV bucket, under the
key `<owner>.<provider_id>`. We watch the bucket, so each heartbeat costs one update of a
deadline (O(changes)), and a heap of deadlines tells in O(log n) which providers fell
silent; we never scan every provider. `ProviderWentOffline` makes the scheduler requeue the
provider's jobs.

nats-server lets an account write only keys that start with its own name, so the owner in
the key is authentic; a heartbeat counts only for a registered provider of that owner,
and one account can never keep another's machine looking alive.
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
        #: The bucket revision of the last heartbeat entry handled (accepted or not).
        self.handled = 0
        self._deadlines: list[tuple[datetime, str]] = []
        self._seeded = False

    def _expect(self, provider_id: str, seen: datetime) -> None:
        self.last_seen[provider_id] = seen
        heapq.heappush(self._deadlines, (seen + self._silence, provider_id))

    def heartbeat(
        self, world: World, provider_id: str, now: datetime, owner: str | None = None
    ) -> Iterator[Step]:
        """A heartbeat from `provider_id`, written under `owner`'s key (None: not checked)."""
        provider = world.provider(provider_id)
        if owner is not None and not provider.exists:
            log.debug("liveness.unregistered_heartbeat", provider_id=provider_id, owner=owner)
            return
        if owner is not None and provider.owner != owner:
            log.warning("liveness.foreign_heartbeat", provider_id=provider_id, owner=owner)
            return
        self._expect(provider_id, now)
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
            if entry.key != heartbeat_key(beat.owner, beat.provider_id):
                log.warning("liveness.mismatched_heartbeat", key=entry.key)
                continue

            def decide(pid: str = beat.provider_id, owner: str = beat.owner) -> Iterator[Step]:
                return liveness.heartbeat(executor.world, pid, clock(), owner)

            await executor.carry_out(decide)
            liveness.handled = entry.revision or liveness.handled
    finally:
        with contextlib.suppress(Exception):
            await watcher.stop()  # type: ignore[no-untyped-call]
