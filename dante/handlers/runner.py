"""Running handlers: a world kept current from the log, and a loop over a durable consumer
that feeds one or more handlers, carries out their decisions and acknowledges.

A handler is pure: `decide(world, recorded, now)` and `due(world, now)` yield `Decision`s
(`dante.domain.decision`, the shape the command deciders return too), each one atomic
append and instructions to publish once it landed. The `Executor` (`dante.handlers.executor`,
the command service's and the simulations' too) carries each out and applies it to the
world before the handler decides the next one. The runner:

- keeps one `World` per process current by following the whole log (`WorldTail`);
- binds its handlers to a durable pull consumer on the log, so several processes can share
  their work; triggers are decided once the world has reached the last one fetched;
- acknowledges a trigger only after its decisions landed, so a crash redelivers it, and
  their message ids (derived from what caused them) make the second landing a no-op;
- calls `due(world, now)` every second for time-based decisions (grace periods, timeouts).

A handler whose decisions are all level-based may also have `decide_many(world, triggers,
now)` (a `ManyHandler`): the triggers fetched together are then decided at once, when the
world has reached the last of them, and the decisions appended in as few atomic batches as
their aggregates allow (`Executor.carry_out_merged`).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, Protocol, runtime_checkable

import anyio
import msgspec
import structlog
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from dante.domain.decision import Decision, Instruction
from dante.domain.model import World
from dante.events.codec import Recorded, decode_event
from dante.events.subjects import EVENT_PREFIX
from dante.handlers.executor import Executor
from dante.handlers.pull import Puller
from dante.schemas.codec import DecodeError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg

    from dante.events.store import EventStore
    from dante.handlers.snapshot import Snapshots

log = structlog.get_logger(__name__)

#: Fetched batches that may wait for a handler sharing a consumer before fetching pauses.
_QUEUED_BATCHES: Final = 8


class Handler(Protocol):
    """What the runner needs of a handler: every handler declares all of it."""

    @property
    def name(self) -> str:
        """Names the durable consumer and prefixes the handler's event ids."""

    @property
    def triggers(self) -> frozenset[str] | None:
        """The names of the event types `decide` acts on (the runner acknowledges others
        without decoding them); None: every event."""

    @property
    def subjects(self) -> str | None:
        """The filter of its durable consumer when it acts on one aggregate only; None: the
        whole log."""

    def decide(self, world: World, recorded: Recorded, now: datetime) -> Iterable[Decision]:
        """The steps a trigger calls for, decided one by one against the current world."""

    def due(self, world: World, now: datetime) -> Iterable[Decision]:
        """The steps time calls for (deadlines passed)."""


@runtime_checkable
class ManyHandler(Handler, Protocol):
    """A handler that decides the triggers fetched together at once (level-based only)."""

    def decide_many(
        self, world: World, triggers: Sequence[Recorded], now: datetime
    ) -> Iterable[Decision]:
        """The steps all these triggers call for; deciding again yields only what is missing."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Tag(msgspec.Struct):
    type: str = ""


_tag: Final = msgspec.json.Decoder(_Tag)


def event_type(data: bytes) -> str | None:
    """The type of an encoded event, read without decoding the rest; None if unreadable."""
    try:
        return _tag.decode(data).type or None
    except msgspec.DecodeError:
        return None


class WorldTail:
    """Follows the whole log into one `World`; others wait for it to reach a sequence."""

    def __init__(
        self,
        store: EventStore,
        world: World | None = None,
        *,
        snapshots: Snapshots | None = None,
        subjects: str | None = None,
    ) -> None:
        if snapshots is not None and subjects is not None:
            raise ValueError("a world that follows only some subjects is not snapshotted")
        self.store = store
        self.world = world or World()
        #: Where the world is saved now and then, and loaded from at start (None: never).
        self.snapshots = snapshots
        #: Only these subjects (default: the whole log).
        self._subjects = subjects or f"{EVENT_PREFIX}.>"
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._counter = itertools.count()

    async def run(self) -> None:
        # In chunks of whatever arrived: nats-py's message iterator costs a task per message.
        async for chunk in self.store.read_chunks(
            self.world.position + 1, follow=True, subjects=self._subjects
        ):
            self._apply(chunk)
            while self._waiters and self._waiters[0][0] <= self.world.position:
                _, _, future = heapq.heappop(self._waiters)
                if not future.done():
                    future.set_result(None)
            if self.snapshots is not None:
                self.snapshots.maybe_save(self.world)

    async def catch_up(self) -> None:
        """Start from the snapshot, if there is one to use, and read the log after it up to
        its current end, before anything decides."""
        started = time.perf_counter()
        if self.snapshots is not None and self.world.position == 0:
            world = await self.snapshots.load()
            if world is not None:
                self.world = world
        first = self.world.position
        last = await self.store.last_seq()
        async for chunk in self.store.read_chunks(
            self.world.position + 1, stop=last, subjects=self._subjects
        ):
            self._apply(chunk)
        log.info(
            "world.caught_up",
            position=self.world.position,
            snapshot=first,
            events=self.world.position - first,
            seconds=round(time.perf_counter() - started, 3),
        )
        if self.snapshots is not None:
            self.snapshots.maybe_save(self.world)

    def _apply(self, chunk: list[tuple[int, str, datetime | None, bytes]]) -> None:
        for seq, subject, stored_at, data in chunk:
            event = decode_event(data)
            self.world.apply(Recorded(seq=seq, subject=subject, stored_at=stored_at, event=event))

    async def reached(self, seq: int) -> None:
        if self.world.position >= seq:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (seq, next(self._counter), future))
        await future


def executor_for(nc: NATS, store: EventStore, tail: WorldTail, name: str) -> Executor:
    """The executor of a handler (or liveness): on the log, applying to the tail's world,
    publishing its instructions to JetStream with their stable message ids."""
    js = nc.jetstream()

    async def publish(instruction: Instruction) -> None:
        await js.publish(
            instruction.subject, instruction.payload, headers={"Nats-Msg-Id": instruction.msg_id}
        )

    return Executor(store, lambda: tail.world, publish=publish, name=name)


@dataclass(slots=True, eq=False)
class Seat:
    """One handler of a runner: what it acts on, and what carries out its steps."""

    handler: Handler
    #: The event types it acts on (None: every one).
    triggers: frozenset[str] | None
    executor: Executor
    #: Triggers it has decided, and those fetched for it that it has not decided yet (plain
    #: counts for the metrics and `$SRV.STATS`, read when asked).
    decided: int = 0
    undecided: int = 0

    def wants(self, kind: str | None) -> bool:
        return kind is None or self.triggers is None or kind in self.triggers


@dataclass(slots=True)
class _Trigger:
    """A message some handlers act on, and whether all of them landed their steps."""

    msg: Msg
    recorded: Recorded
    seats: list[Seat]
    #: How many of its handlers have not decided on it yet.
    waiting: int
    landed: bool = True


class HandlerRunner:
    """Feeds handlers their triggers from one durable consumer and carries out their steps.

    Several handlers may share the runner (and so its consumer): each event is delivered,
    read and acknowledged once, and the handlers that act on it decide on it side by side.
    The platform runs the scheduler, billing and the dispatcher so, on the whole log: three
    consumers of every event would cost three deliveries and three acknowledgements each.
    An event is acknowledged once every handler that acts on it has landed its steps.
    """

    def __init__(
        self,
        nc: NATS,
        store: EventStore,
        tail: WorldTail,
        handlers: Sequence[Handler],
        *,
        name: str | None = None,
        replaces: Sequence[str] = (),
        clock: Callable[[], datetime] = utcnow,
        subjects: str | None = None,
        batch: int = 256,
        timer_interval: float = 1.0,
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._store = store
        self._tail = tail
        chosen = list(handlers)
        self.seats = [
            Seat(
                handler=handler,
                triggers=handler.triggers,
                executor=executor_for(nc, store, tail, handler.name),
            )
            for handler in chosen
        ]
        self._clock = clock
        #: The handler's own `subjects` (the aggregates it acts on) when it runs alone, else
        #: the whole log. A durable made before keeps its filter (nats-py binds to it as it
        #: is): the runner still skips what no handler acts on, only less cheaply.
        own = chosen[0].subjects if len(chosen) == 1 else None
        self.subjects = subjects or own or f"{EVENT_PREFIX}.>"
        self._batch = batch
        self._timer_interval = timer_interval
        self.durable = f"handler-{name or chosen[0].name}"
        #: Durables of older layouts whose work this one's takes over (see `_take_over`).
        self._replaces = tuple(replaces)
        #: Set once its consumer exists and is being read.
        self.consuming = asyncio.Event()
        #: The stream sequence of the last message fetched, and how many of the consumer's
        #: messages the server still held back then (its `num_pending`).
        self.fetched_seq = 0
        self.pending = 0

    @property
    def world(self) -> World:
        return self._tail.world

    def consumer_config(self, start: int | None = None) -> ConsumerConfig:
        """The durable's configuration: from the log's start, or from sequence `start`."""
        return ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL if start is None else DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=start,
            ack_wait=60,
            max_ack_pending=10_000,
            max_deliver=-1,
            filter_subject=self.subjects,
        )

    async def _take_over(self) -> None:
        """Make the durable where the durables it replaces left off, then delete them.

        An installation made before several handlers shared one consumer has one durable per
        handler. The new one starts after what every old one had acknowledged up to, so
        nothing is skipped; what some had acknowledged beyond that is decided again, which
        lands nothing new (event ids are derived from what caused them).
        """
        if not self._replaces:
            return
        stream = self._store.stream
        try:
            await self._js.consumer_info(stream, self.durable)
        except NotFoundError:
            pass
        else:
            return
        floors = []
        for old in self._replaces:
            with contextlib.suppress(NotFoundError):
                info = await self._js.consumer_info(stream, old)
                floors.append(info.ack_floor.stream_seq if info.ack_floor else 0)
        if not floors:
            return
        start = min(floors) + 1
        await self._js.add_consumer(stream, self.consumer_config(start))
        log.info("handler.took_over", durable=self.durable, replaced=self._replaces, start=start)
        for old in self._replaces:
            with contextlib.suppress(NotFoundError):
                await self._js.delete_consumer(stream, old)

    async def run(self) -> None:
        await self._take_over()
        sub = await self._js.pull_subscribe(
            self.subjects,
            durable=self.durable,
            stream=self._store.stream,
            config=self.consumer_config(),
        )
        self.consuming.set()
        puller = Puller(sub, self._batch)
        # Each handler decides its triggers in log order in a task of its own, so a slow one
        # (billing's atomic batches) does not hold the others' next triggers back.
        queues: list[asyncio.Queue[list[_Trigger]]] = [
            asyncio.Queue(maxsize=_QUEUED_BATCHES) for _ in self.seats
        ]
        try:
            async with anyio.create_task_group() as tg:
                for seat, queue in zip(self.seats, queues, strict=True):
                    tg.start_soon(self._timers, seat, name=f"{seat.handler.name}-timers")
                    tg.start_soon(self._decide_in_order, seat, queue, name=seat.handler.name)
                while True:
                    try:
                        msgs = await puller.next()
                    except (NatsTimeout, TimeoutError):
                        continue
                    if msgs:
                        meta = msgs[-1].metadata
                        self.fetched_seq = meta.sequence.stream
                        self.pending = meta.num_pending
                    triggers = await self._triggers(msgs)
                    for seat, queue in zip(self.seats, queues, strict=True):
                        mine = [trigger for trigger in triggers if seat in trigger.seats]
                        if mine:
                            seat.undecided += len(mine)
                            await queue.put(mine)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _decide_in_order(self, seat: Seat, queue: asyncio.Queue[list[_Trigger]]) -> None:
        """Decide one handler's triggers as they come; acknowledge each message once every
        handler acting on it is done with it (a handler that gave up leaves it for
        redelivery)."""
        while True:
            # Whatever waits, at once: a busy handler then decides in big batches (billing's
            # charges share atomic batches), as it would fetching alone.
            triggers = await queue.get()
            while not queue.empty():
                triggers.extend(queue.get_nowait())
            await self._tail.reached(triggers[-1].recorded.seq)
            await self._serve(seat, triggers)
            seat.undecided -= len(triggers)
            seat.decided += len(triggers)
            for trigger in triggers:
                trigger.waiting -= 1
                if trigger.waiting:
                    continue
                if trigger.landed:
                    await trigger.msg.ack()
                else:
                    await trigger.msg.nak(delay=1)

    async def _triggers(self, msgs: list[Msg]) -> list[_Trigger]:
        """The messages some handler acts on, read; the others acknowledged unread."""
        triggers = []
        for msg in msgs:
            kind = event_type(msg.data)
            seats = [seat for seat in self.seats if seat.wants(kind)]
            if not seats:
                await msg.ack()
                continue
            meta = msg.metadata
            seq = meta.sequence.stream
            try:
                event = decode_event(msg.data)
            except DecodeError as exc:
                # Not ours to fix; the auditor reports it. Never block the handlers on it.
                log.exception(
                    "handler.undecodable", durable=self.durable, seq=seq, reason=exc.reason
                )
                await msg.ack()
                continue
            recorded = Recorded(seq=seq, subject=msg.subject, stored_at=meta.timestamp, event=event)
            triggers.append(_Trigger(msg, recorded, seats, waiting=len(seats)))
        return triggers

    async def _serve(self, seat: Seat, mine: list[_Trigger]) -> None:
        """One handler's decisions on its triggers: all at once (`decide_many`), else one
        by one."""
        handler = seat.handler
        if isinstance(handler, ManyHandler):
            recordeds = [trigger.recorded for trigger in mine]

            def decide_all() -> Iterable[Decision]:
                return handler.decide_many(self.world, recordeds, self._clock())

            (done,) = await seat.executor.carry_out_merged([decide_all])
            for trigger in mine:
                trigger.landed = trigger.landed and done
            return
        for trigger in mine:
            recorded = trigger.recorded

            def decide(r: Recorded = recorded) -> Iterable[Decision]:
                return handler.decide(self.world, r, self._clock())

            done = await seat.executor.carry_out(decide)
            trigger.landed = trigger.landed and done

    async def _timers(self, seat: Seat) -> None:
        while True:
            await asyncio.sleep(self._timer_interval)
            try:
                await self._due(seat)
            except Exception:
                log.exception("handler.timer_failed", handler=seat.handler.name)

    async def _due(self, seat: Seat) -> bool:
        handler = seat.handler
        return await seat.executor.carry_out(lambda: handler.due(self.world, self._clock()))

    def lag(self, seat: Seat) -> int:
        """How many events of the log `seat`'s handler has yet to act on: those the server
        still holds for the consumer, and those fetched that it has not decided yet."""
        return self.pending + seat.undecided

    async def tick(self) -> None:
        """Run every handler's time-based decisions once now (tests call this instead of
        waiting)."""
        for seat in self.seats:
            await self._due(seat)
