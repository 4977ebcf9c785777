"""Running handlers: a world kept current from the log, and a loop per handler over its
durable consumer that decides, appends and acknowledges.

A handler is pure: `decide(world, recorded, now)` and `due(world, now)` yield `Step`s, each
one atomic append (and instructions to publish once it landed). The runner carries out each
step and applies it to the world before the handler decides the next one. The runner:

- keeps one `World` per process current by following the whole log (`WorldTail`);
- binds the handler to a durable pull consumer on the log, so several processes can share
  one handler's work; each trigger is decided only once the world has reached it;
- appends each step with the versions it was decided on and applies it to the world at once,
  so the next decision sees it; on a conflict it re-reads the aggregate and decides again;
- acknowledges a trigger only after its steps landed, so a crash redelivers it, and the
  step's message ids (derived from what caused it) make the second landing a no-op;
- calls `due(world, now)` every second for time-based decisions (grace periods, timeouts).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, Protocol

import structlog
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from dante.events.codec import Recorded, decode_event
from dante.events.errors import ConcurrencyConflict
from dante.events.streams import EVENT_PREFIX
from dante.handlers.model import World
from dante.schemas.codec import DecodeError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg

    from dante.events.store import Append, EventStore

log = structlog.get_logger(__name__)

_MAX_TRIES: Final = 8


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
    #: Names the durable consumer and prefixes the handler's event ids.
    name: str

    def decide(self, world: World, recorded: Recorded, now: datetime) -> Iterable[Step]:
        """The steps a trigger calls for, decided one by one against the current world."""

    def due(self, world: World, now: datetime) -> Iterable[Step]:
        """The steps time calls for (deadlines passed)."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class WorldTail:
    """Follows the whole log into one `World`; others wait for it to reach a sequence."""

    def __init__(self, store: EventStore, world: World | None = None) -> None:
        self.store = store
        self.world = world or World()
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._counter = itertools.count()

    async def run(self) -> None:
        async for recorded in self.store.read(self.world.position + 1, follow=True):
            self.world.apply(recorded)
            while self._waiters and self._waiters[0][0] <= recorded.seq:
                _, _, future = heapq.heappop(self._waiters)
                if not future.done():
                    future.set_result(None)

    async def catch_up(self) -> None:
        """Read the log up to its current end before anything decides."""
        last = await self.store.last_seq()
        async for recorded in self.store.read(self.world.position + 1, stop=last):
            self.world.apply(recorded)

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
                await self.world.refresh(self._store, conflict.subject)
                continue
            return True
        log.warning("handler.gave_up", handler=self._name)
        return False

    async def _execute(self, step: Step) -> None:
        if step.appends:
            appended = await self._store.append(*step.appends)
            if len(appended.seqs) == len(step.appends):
                for item, seq in zip(step.appends, appended.seqs, strict=True):
                    self.world.apply_event(item.event, seq)
            else:
                for item in step.appends:
                    await self.world.refresh(self._store, item.subject)
        for instruction in step.instructions:
            await self._js.publish(
                instruction.subject,
                instruction.payload,
                headers={"Nats-Msg-Id": instruction.msg_id},
            )


class HandlerRunner:
    """Feeds one handler its triggers from a durable consumer and carries out its steps."""

    def __init__(
        self,
        nc: NATS,
        store: EventStore,
        tail: WorldTail,
        handler: Handler,
        *,
        clock: Callable[[], datetime] = utcnow,
        subjects: str = f"{EVENT_PREFIX}.>",
        batch: int = 256,
        timer_interval: float = 1.0,
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._store = store
        self._tail = tail
        self.handler = handler
        self._clock = clock
        self._subjects = subjects
        self._batch = batch
        self._timer_interval = timer_interval
        self.durable = f"handler-{handler.name}"
        self.executor = StepExecutor(nc, store, tail, handler.name)

    @property
    def world(self) -> World:
        return self._tail.world

    async def run(self) -> None:
        sub = await self._js.pull_subscribe(
            self._subjects,
            durable=self.durable,
            stream=self._store.stream,
            config=ConsumerConfig(
                durable_name=self.durable,
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=60,
                max_ack_pending=10_000,
                max_deliver=-1,
            ),
        )
        timers = asyncio.create_task(self._timers(), name=f"{self.handler.name}-timers")
        try:
            while True:
                try:
                    msgs = await sub.fetch(self._batch, timeout=1)
                except (NatsTimeout, TimeoutError):
                    continue
                for msg in msgs:
                    await self._trigger(msg)
        finally:
            timers.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timers
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _trigger(self, msg: Msg) -> None:
        meta = msg.metadata
        seq = meta.sequence.stream
        try:
            event = decode_event(msg.data)
        except DecodeError as exc:
            # Not ours to fix; the auditor reports it. Never block the handler on it.
            log.exception(
                "handler.undecodable", handler=self.handler.name, seq=seq, reason=exc.reason
            )
            await msg.ack()
            return
        await self._tail.reached(seq)
        recorded = Recorded(seq=seq, subject=msg.subject, stored_at=meta.timestamp, event=event)
        done = await self._carry_out(
            lambda: self.handler.decide(self.world, recorded, self._clock())
        )
        if done:
            await msg.ack()
        else:
            await msg.nak(delay=1)

    async def _timers(self) -> None:
        while True:
            await asyncio.sleep(self._timer_interval)
            try:
                await self._carry_out(lambda: self.handler.due(self.world, self._clock()))
            except Exception:
                log.exception("handler.timer_failed", handler=self.handler.name)

    async def tick(self) -> None:
        """Run the time-based decisions once now (tests call this instead of waiting)."""
        await self._carry_out(lambda: self.handler.due(self.world, self._clock()))

    async def _carry_out(self, decide: Callable[[], Iterable[Step]]) -> bool:
        return await self.executor.carry_out(decide)
