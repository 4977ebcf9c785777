"""Running handlers: a world kept current from the log, and a loop over a durable consumer
that feeds one or more handlers, carries out their decisions and acknowledges.

A handler is pure: `decide(world, recorded, now)` and `due(world, now)` yield `Step`s, each
one atomic append (and instructions to publish once it landed). The runner carries out each
step and applies it to the world before the handler decides the next one. The runner:

- keeps one `World` per process current by following the whole log (`WorldTail`);
- binds its handlers to a durable pull consumer on the log, so several processes can share
  their work; triggers are decided once the world has reached the last one fetched;
- appends each step with the versions it was decided on and applies it to the world at once,
  so the next decision sees it; on a conflict it re-reads the aggregate and decides again;
- acknowledges a trigger only after its steps landed, so a crash redelivers it, and the
  step's message ids (derived from what caused it) make the second landing a no-op;
- calls `due(world, now)` every second for time-based decisions (grace periods, timeouts).

A handler whose decisions are all level-based may also have `decide_many(world, triggers,
now)`: the triggers fetched together are then decided at once, when the world has reached
the last of them, and the steps appended in as few atomic batches as their aggregates allow
(`StepExecutor.carry_out_merged`). On a file stream every atomic batch costs nats-server a
sync to disk, so a batch of a hundred charges costs about what one charge does.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, Protocol, runtime_checkable

import anyio
import msgspec
import structlog
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from dante.domain.model import World
from dante.events.codec import Recorded, decode_event
from dante.events.errors import ConcurrencyConflict
from dante.events.subjects import EVENT_PREFIX
from dante.handlers.pull import Puller
from dante.schemas.codec import DecodeError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg

    from dante.events.records import Append
    from dante.events.store import EventStore

log = structlog.get_logger(__name__)

_MAX_TRIES: Final = 8
#: The most events one merged atomic batch carries (nats-server takes up to 1000).
_MERGE_LIMIT: Final = 500
#: Fetched batches that may wait for a handler sharing a consumer before fetching pauses.
_QUEUED_BATCHES: Final = 8


@dataclass(frozen=True, slots=True)
class Instruction:
    """A message for an agent, published to the dispatch stream with a stable message id."""

    subject: str
    payload: bytes
    msg_id: str


@dataclass(slots=True)
class Step:
    """One decision: events to append atomically, then instructions to publish."""

    appends: list[Append] = field(default_factory=list)
    instructions: list[Instruction] = field(default_factory=list)


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

    def decide(self, world: World, recorded: Recorded, now: datetime) -> Iterable[Step]:
        """The steps a trigger calls for, decided one by one against the current world."""

    def due(self, world: World, now: datetime) -> Iterable[Step]:
        """The steps time calls for (deadlines passed)."""


@runtime_checkable
class ManyHandler(Handler, Protocol):
    """A handler that decides the triggers fetched together at once (level-based only)."""

    def decide_many(
        self, world: World, triggers: Sequence[Recorded], now: datetime
    ) -> Iterable[Step]:
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

    def __init__(self, store: EventStore, world: World | None = None) -> None:
        self.store = store
        self.world = world or World()
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._counter = itertools.count()

    async def run(self) -> None:
        # In chunks of whatever arrived: nats-py's message iterator costs a task per message.
        async for chunk in self.store.read_chunks(self.world.position + 1, follow=True):
            self._apply(chunk)
            while self._waiters and self._waiters[0][0] <= self.world.position:
                _, _, future = heapq.heappop(self._waiters)
                if not future.done():
                    future.set_result(None)

    async def catch_up(self) -> None:
        """Read the log up to its current end before anything decides."""
        last = await self.store.last_seq()
        async for chunk in self.store.read_chunks(self.world.position + 1, stop=last):
            self._apply(chunk)

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


class StepExecutor:
    """Carries out steps: append, apply to the world, publish; re-decide on a conflict."""

    def __init__(self, nc: NATS, store: EventStore, tail: WorldTail, name: str) -> None:
        self._js = nc.jetstream()
        self._store = store
        self._tail = tail
        self._name = name

    @property
    def world(self) -> World:
        return self._tail.world

    async def carry_out(self, decide: Callable[[], Iterable[Step]]) -> bool:
        """Run `decide` and carry out each step it yields; True when all landed."""
        for _ in range(_MAX_TRIES):
            try:
                for step in decide():
                    await self._execute(step)
            except ConcurrencyConflict as conflict:
                log.debug("handler.conflict", handler=self._name, subject=conflict.subject)
                await self._store.catch_up(self.world, conflict.subject)
                continue
            return True
        log.warning("handler.gave_up", handler=self._name)
        return False

    async def carry_out_merged(self, decides: Sequence[Callable[[], Iterable[Step]]]) -> list[bool]:
        """Carry out the steps of many decisions in few atomic batches; per decision, whether
        all its steps landed.

        A step joins the batch unless it checks (was decided on) an aggregate that the batch
        already writes: it was decided without those writes, so the batch is appended first
        and the decision made again. That, and a conflict, after which every decision of the
        failed batch is made again, require level-based decisions: deciding again yields only
        what has not landed yet.
        """
        done = [False] * len(decides)
        for _ in range(_MAX_TRIES):
            todo = [index for index, landed in enumerate(done) if not landed]
            if not todo:
                break
            batch = _Batch()
            try:
                for index in todo:
                    if await self._merge(batch, decides[index], done):
                        batch.members.append(index)
                await self._flush(batch, done)
            except ConcurrencyConflict as conflict:
                log.debug("handler.conflict", handler=self._name, subject=conflict.subject)
                await self._store.catch_up(self.world, conflict.subject)
        if not all(done):
            log.warning("handler.gave_up", handler=self._name, decisions=done.count(False))
        return done

    async def _merge(
        self, batch: _Batch, decide: Callable[[], Iterable[Step]], done: list[bool]
    ) -> bool:
        """Add a decision's steps to the batch; False if it kept clashing (left for the next
        round, as a conflict would be)."""
        for _ in range(_MAX_TRIES):
            try:
                for step in decide():
                    if batch.clashes(step):
                        raise _Stale  # noqa: TRY301 (leaves the decision to make it again)
                    batch.add(step)
            except _Stale:
                await self._flush(batch, done)
                continue
            return True
        return False

    async def _flush(self, batch: _Batch, done: list[bool]) -> None:
        """Append the batch; mark its decisions done unless it had landed before."""
        members, appends, instructions = batch.take()
        if appends:
            appended = await self._store.append(*appends)
            if appended.duplicate:
                # Landed before, perhaps merged differently: where is unknown, so read it
                # back, and make these decisions again (they yield only what is missing).
                for subject in dict.fromkeys(item.subject for item in appends):
                    await self._store.catch_up(self.world, subject)
                return
            for item, seq in zip(appends, appended.seqs, strict=True):
                self.world.apply_event(item.event, seq)
        for instruction in instructions:
            await self._publish(instruction)
        for index in members:
            done[index] = True

    async def _publish(self, instruction: Instruction) -> None:
        await self._js.publish(
            instruction.subject, instruction.payload, headers={"Nats-Msg-Id": instruction.msg_id}
        )

    async def _execute(self, step: Step) -> None:
        if step.appends:
            appended = await self._store.append(*step.appends)
            if len(appended.seqs) == len(step.appends):
                for item, seq in zip(step.appends, appended.seqs, strict=True):
                    self.world.apply_event(item.event, seq)
            else:
                for item in step.appends:
                    await self._store.catch_up(self.world, item.subject)
        for instruction in step.instructions:
            await self._publish(instruction)


class _Stale(Exception):
    """A step was decided without writes of the batch it would join."""


@dataclass(slots=True)
class _Batch:
    """Steps of several decisions to append as one atomic batch."""

    appends: list[Append] = field(default_factory=list)
    instructions: list[Instruction] = field(default_factory=list)
    #: Decisions whose every step is in this batch (indices into the decides).
    members: list[int] = field(default_factory=list)
    written: set[str] = field(default_factory=set)

    def clashes(self, step: Step) -> bool:
        if not self.appends:
            return False
        if len(self.appends) + len(step.appends) > _MERGE_LIMIT:
            return True
        return any(a.expected is not None and a.subject in self.written for a in step.appends)

    def add(self, step: Step) -> None:
        self.appends.extend(step.appends)
        self.instructions.extend(step.instructions)
        self.written.update(a.subject for a in step.appends)

    def take(self) -> tuple[list[int], list[Append], list[Instruction]]:
        taken = (self.members, self.appends, self.instructions)
        self.members, self.appends, self.instructions = [], [], []
        self.written = set()
        return taken


@dataclass(slots=True, eq=False)
class Seat:
    """One handler of a runner: what it acts on, and what carries out its steps."""

    handler: Handler
    #: The event types it acts on (None: every one).
    triggers: frozenset[str] | None
    executor: StepExecutor

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
                executor=StepExecutor(nc, store, tail, handler.name),
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
                    triggers = await self._triggers(msgs)
                    for seat, queue in zip(self.seats, queues, strict=True):
                        mine = [trigger for trigger in triggers if seat in trigger.seats]
                        if mine:
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

            def decide_all() -> Iterable[Step]:
                return handler.decide_many(self.world, recordeds, self._clock())

            (done,) = await seat.executor.carry_out_merged([decide_all])
            for trigger in mine:
                trigger.landed = trigger.landed and done
            return
        for trigger in mine:
            recorded = trigger.recorded

            def decide(r: Recorded = recorded) -> Iterable[Step]:
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

    async def tick(self) -> None:
        """Run every handler's time-based decisions once now (tests call this instead of
        waiting)."""
        for seat in self.seats:
            await self._due(seat)
