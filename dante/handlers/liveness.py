"""Liveness: a provider whose agent stops heartbeating goes offline; a heartbeat brings it back.

Agents write a heartbeat every few seconds to the `dante_heartbeats` KV bucket, under the
key `<owner>.<provider_id>`. We watch the bucket, so each heartbeat costs one update of a
deadline (O(changes)), and a heap of deadlines tells in O(log n) which providers fell
silent; we never scan every provider. `ProviderWentOffline` makes the scheduler requeue the
provider's jobs.

nats-server lets an account write only keys that start with its own name, so the owner in
the key is authentic; a heartbeat counts only for a registered provider of that owner,
and one account can never keep another's machine looking alive.

Silence is judged against what has been *heard*, not the clock alone: a platform that falls
behind reading heartbeats (overloaded, or just started) would otherwise take machines whose
beats wait unread in its queue for dead ones, and requeue their jobs. The watcher says when
it has nothing left to read (the server has nothing pending for it and its own queues are
empty); only then is "now" heard. While it is behind, silence is measured up to the last
moment it was caught up, so a backlog delays going offline instead of causing it.

Nor can agents be heard while the platform itself is away: while its connection is down
nothing is heard, and once it is back (a server restarted, a network healed), the agents
need time to come back too (theirs were cut as well, and a restarting platform refuses
their logins for a moment). So after the platform's connection was re-established, nobody
goes offline before a whole silence has passed since (`resume`): a grace period, counted
from when the watcher first noticed the connection back.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final

import anyio
import msgspec
import structlog

from dante.domain.decision import Decision
from dante.domain.model import World
from dante.domain.settings import Settings
from dante.events.codec import Recorded
from dante.events.records import Append
from dante.events.subjects import EVENT_PREFIX, HEARTBEAT_BUCKET, heartbeat_key
from dante.handlers.executor import Executor
from dante.handlers.runner import utcnow
from dante.schemas import events as ev
from dante.schemas.dispatch import Heartbeat

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.js.kv import KeyValue

log = structlog.get_logger(__name__)

NAME: Final = "liveness"
#: How often the watcher looks whether its connection was re-established.
RECONNECT_CHECK_S: Final = 0.2
_heartbeat: Final = msgspec.json.Decoder(Heartbeat)


class Liveness:
    name = NAME
    #: Only provider events trigger it: its durable consumer gets nothing else.
    subjects = f"{EVENT_PREFIX}.provider.>"
    #: The event types `decide` acts on; the runner acknowledges others unread.
    triggers = frozenset(kind.__name__ for kind in (ev.ProviderRegistered, ev.ProviderCameOnline))

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self._silence = timedelta(seconds=self.settings.offline_after_s)
        self.last_seen: dict[str, datetime] = {}
        #: The bucket revision of the last heartbeat entry handled (accepted or not).
        self.handled = 0
        self._deadlines: list[tuple[datetime, str]] = []
        self._seeded = False
        #: Whether every heartbeat written so far has been handled; None: nothing watches
        #: the bucket here (heartbeats are handed in directly), so yes.
        self.caught_up: Callable[[], bool] | None = None
        #: The last moment every heartbeat written had been handled (None: not yet).
        self.heard_until: datetime | None = None
        #: Whether a watcher was started (one started after it resumes).
        self.watched = False
        #: Until when nobody goes offline: the platform was away, agents get a silence's
        #: time to be heard again from when it came back (None: no grace).
        self.grace_until: datetime | None = None

    def resume(self, at: datetime) -> None:
        """The platform hears again from `at` on, after it could not (its connection was
        down): no silence before `at` counts, so nobody goes offline before a whole silence
        after it has passed."""
        until = at + self._silence
        if self.grace_until is None or until > self.grace_until:
            self.grace_until = until
        log.warning(
            "liveness.grace",
            why="the platform hears heartbeats again after its connection was away",
            until=self.grace_until.isoformat(),
        )

    def _expect(self, provider_id: str, seen: datetime) -> None:
        self.last_seen[provider_id] = seen
        heapq.heappush(self._deadlines, (seen + self._silence, provider_id))

    def heartbeat(
        self, world: World, provider_id: str, now: datetime, owner: str | None = None
    ) -> Iterator[Decision]:
        """A heartbeat from `provider_id`, written under `owner`'s key (None: not checked)."""
        provider = world.provider(provider_id)
        if owner is not None and not provider.exists:
            log.debug("liveness.unregistered_heartbeat", provider_id=provider_id, owner=owner)
            return
        if owner is not None and provider.owner != owner:
            log.warning("liveness.foreign_heartbeat", provider_id=provider_id, owner=owner)
            return
        self._expect(provider_id, now)
        log.debug("liveness.heartbeat", provider_id=provider_id, status=provider.status)
        if provider.status == "offline":
            event = ev.ProviderCameOnline(
                event_id=f"{NAME}:online:{provider_id}:{provider.version}",
                at=now,
                cause=f"seq:{provider.version}",
                provider_id=provider_id,
            )
            yield Decision(appends=[Append(event=event, expected=provider.version)])

    def decide(self, world: World, recorded: Recorded, now: datetime) -> Iterator[Decision]:
        del world
        event = recorded.event
        # A provider that joins and never heartbeats is offline after the same silence.
        if (
            isinstance(event, ev.ProviderRegistered | ev.ProviderCameOnline)
            and event.provider_id not in self.last_seen
        ):
            self._expect(event.provider_id, now)
        return iter(())

    def due(self, world: World, now: datetime) -> Iterator[Decision]:
        if not self._seeded:
            self._seeded = True
            for provider in world.providers.values():
                if provider.online and provider.provider_id not in self.last_seen:
                    self._expect(provider.provider_id, now)
        heard = self._heard(now)
        if heard is None:
            return
        # Counting silence from the end of the grace for everyone heard before it is the
        # same as waiting for that end: max(seen, resumed) + silence <= heard.
        if self.grace_until is not None and heard < self.grace_until:
            return
        while self._deadlines and self._deadlines[0][0] <= heard:
            _, provider_id = heapq.heappop(self._deadlines)
            seen = self.last_seen.get(provider_id)
            if seen is None or seen + self._silence > heard:
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
            yield Decision(appends=[Append(event=event, expected=provider.version)])

    def _heard(self, now: datetime) -> datetime | None:
        """Until when every heartbeat has been heard: now, or when the watcher last was
        caught up (None: it has not been since it started)."""
        if self.caught_up is None or self.caught_up():
            self.heard_until = now
            return now
        if self.heard_until is not None and now - self.heard_until > self._silence:
            log.warning(
                "liveness.behind",
                heard_until=self.heard_until.isoformat(),
                behind_s=round((now - self.heard_until).total_seconds(), 1),
            )
        return self.heard_until


async def watch_heartbeats(
    nc: NATS,
    executor: Executor,
    liveness: Liveness,
    *,
    clock: Callable[[], datetime] = utcnow,
) -> None:
    """Feed every heartbeat written to the KV bucket into `liveness`.

    Each time the connection is re-established the bucket is watched anew: nats-py's
    watcher would stay deaf after a server restart until it noticed its consumer's missing
    heartbeats (about 20 s). A watcher that follows another (this one, or one that failed)
    skips the heartbeats handled before, which its first values repeat, and liveness
    `resume`s once it has caught up: the agents get a whole silence to be heard again.
    """
    resuming = liveness.watched
    liveness.watched = True
    try:
        while True:
            await _watch(nc, executor, liveness, clock, resuming=resuming)
            resuming = True
            log.info("liveness.watching_again", why="the connection was re-established")
    finally:
        # Nobody hears heartbeats now: nobody goes offline until a watcher catches up again.
        liveness.caught_up = lambda: False


async def _watch(
    nc: NATS,
    executor: Executor,
    liveness: Liveness,
    clock: Callable[[], datetime],
    *,
    resuming: bool,
) -> None:
    """Watch the bucket until the connection was re-established (then return)."""
    liveness.caught_up = lambda: False
    watcher = await _watcher(nc, retry=resuming)
    hearing = _Hearing(nc, watcher, liveness, clock, resuming=resuming)
    liveness.heard_until = None
    liveness.caught_up = hearing

    async def handle(entry: KeyValue.Entry) -> None:
        if entry.value is None or entry.operation is not None:
            return  # a delete or purge
        try:
            beat = _heartbeat.decode(entry.value)
        except msgspec.DecodeError:
            log.warning("liveness.bad_heartbeat", key=entry.key)
            return
        if entry.key != heartbeat_key(beat.owner, beat.provider_id):
            log.warning("liveness.mismatched_heartbeat", key=entry.key)
            return

        def decide(pid: str = beat.provider_id, owner: str = beat.owner) -> Iterator[Decision]:
            return liveness.heartbeat(executor.world, pid, clock(), owner)

        await executor.carry_out(decide)
        liveness.handled = entry.revision or liveness.handled

    # The first values are the bucket's current ones: after another watcher, those it
    # handled are old news, not heartbeats heard now.
    seen_before = liveness.handled if resuming else 0
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_stop_when_reconnected, hearing, watcher)
            async for entry in watcher:
                if entry is None:
                    hearing.server_pending = 0  # the initial values are all in
                    seen_before = 0
                    continue
                hearing.server_pending = None  # one in hand: not caught up before handled
                if (entry.revision or 0) > seen_before:
                    await handle(entry)
                hearing.server_pending = entry.delta
            tasks.cancel_scope.cancel()
    finally:
        liveness.caught_up = lambda: False
        with contextlib.suppress(Exception):
            await watcher.stop()  # type: ignore[no-untyped-call]


async def _watcher(nc: NATS, *, retry: bool) -> KeyValue.KeyWatcher:
    """A new watcher of the bucket; with `retry`, as soon as JetStream answers again (it
    takes a few seconds after a server restart)."""
    delay = 0.5
    while True:
        try:
            kv = await nc.jetstream().key_value(HEARTBEAT_BUCKET)
            return await kv.watchall(include_history=False)
        except Exception as exc:
            if not retry:
                raise
            log.warning("liveness.watch_failed", error=repr(exc), retry_in=delay)
        await anyio.sleep(delay)
        delay = min(delay * 2, 5.0)


async def _stop_when_reconnected(hearing: _Hearing, watcher: KeyValue.KeyWatcher) -> None:
    # Polled: nats-py says it only to the callbacks, which are the connection owner's.
    while not hearing.reconnected:  # noqa: ASYNC110
        await anyio.sleep(RECONNECT_CHECK_S)
    await watcher.stop()  # type: ignore[no-untyped-call]  # ends the iteration


class _Hearing:
    """`Liveness.caught_up` for one watcher: connected, and nothing left to read. With
    `resuming` (the watcher replaces one the connection lost), the first time it has caught
    up liveness `resume`s."""

    def __init__(
        self,
        nc: NATS,
        watcher: object,
        liveness: Liveness,
        clock: Callable[[], datetime],
        *,
        resuming: bool,
    ) -> None:
        self._nc = nc
        self._watcher = watcher
        self._liveness = liveness
        self._clock = clock
        self._resuming = resuming
        #: How many heartbeats the server still had for us when it sent the last one
        #: handled (None: one is in hand, or none came yet).
        self.server_pending: int | None = None
        #: The connection's reconnects when the watcher started.
        self._reconnects = _reconnects(nc)

    @property
    def reconnected(self) -> bool:
        """Whether the connection was re-established since the watcher started."""
        return _reconnects(self._nc) != self._reconnects

    def __call__(self) -> bool:
        if not self._nc.is_connected or self.reconnected:
            return False  # nothing can be heard, or not by this watcher
        if self.server_pending != 0 or _backlog(self._watcher) != 0:
            return False
        if self._resuming:
            self._resuming = False
            self._liveness.resume(self._clock())
        return True


def _reconnects(nc: NATS) -> int:
    """How many times nats-py has re-established the connection (its public statistics)."""
    count = nc.stats.get("reconnects", 0)
    return count if isinstance(count, int) else 0


def _backlog(watcher: object) -> int:
    """Heartbeats delivered to this process and not yet handled: in the watcher's queue and
    its subscription's (nats-py keeps both private; were they renamed, 0: the server's
    pending count still tells whether it had more)."""
    queued = getattr(watcher, "_updates", None)
    subscription = getattr(watcher, "_sub", None)
    backlog = queued.qsize() if isinstance(queued, asyncio.Queue) else 0
    pending = getattr(subscription, "pending_msgs", 0)
    return backlog + (pending if isinstance(pending, int) else 0)
