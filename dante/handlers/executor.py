"""Carrying out decisions: one executor for the command service, the handlers and the
tests' simulations alike.

Each decision is one atomic append with the versions it was decided on. The executor appends
it, applies it to the world at once, and publishes its instructions; on a conflict it reads
the aggregate that moved and decides again. Many level-based decisions can also be carried
out merged into few atomic batches (`carry_out_merged`): on a file stream every atomic batch
costs nats-server a sync to disk, so a batch of a hundred charges costs about what one does.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

import structlog

from dante.domain.decision import Decision, Instruction
from dante.events.errors import ConcurrencyConflict

if TYPE_CHECKING:
    from dante.domain.model import World
    from dante.events.records import Append, Appended, Fold

log = structlog.get_logger(__name__)

_MAX_TRIES: Final = 8
#: The most events one merged atomic batch carries (nats-server takes up to 1000).
_MERGE_LIMIT: Final = 500


class GaveUp(Exception):
    """A decision kept meeting conflicts: the aggregates it reads change too fast."""


@dataclass(frozen=True, slots=True)
class Landed:
    """A decision carried out, and where its events landed in the log."""

    decision: Decision
    seqs: tuple[int, ...]


class Log(Protocol):
    """What the executor needs of the log: `EventStore`, or the tests' in-memory log."""

    async def append(self, *items: Append) -> Appended: ...

    async def catch_up(self, fold: Fold, subject: str) -> int: ...


#: Publishes an instruction to the agents once its decision's events landed.
Publish = Callable[[Instruction], Awaitable[None]]


async def _no_publishing(instruction: Instruction) -> None:
    raise AssertionError(f"nowhere to publish {instruction.subject}")


class Executor:
    """Carries out decisions, the same way for commands and handlers: append each with the
    versions it was decided on, apply it to the world at once (so the next decision sees
    it), publish its instructions; on a conflict, read the aggregate again and decide again.
    """

    def __init__(
        self,
        log: Log,
        world: Callable[[], World],
        *,
        publish: Publish = _no_publishing,
        name: str = "",
    ) -> None:
        self._store = log
        self._world = world
        self._publish = publish
        self._name = name

    @property
    def world(self) -> World:
        return self._world()

    async def run(
        self,
        decide: Callable[[], Iterable[Decision]],
        *,
        on_conflict: Callable[[], Awaitable[None]] | None = None,
    ) -> list[Landed]:
        """Run `decide` and carry out each decision it yields; what landed. On a conflict,
        the aggregate is read again (and `on_conflict` awaited) and `decide` run again;
        `GaveUp` after too many. What `decide` raises (a `Rejected`) goes to the caller."""
        for _ in range(_MAX_TRIES):
            try:
                # One by one, in order: `decide` may be a generator reading the world, which
                # then holds what the decisions before landed.
                landed = [await self._execute(decision) for decision in decide()]
            except ConcurrencyConflict as conflict:
                log.debug("decision.conflict", who=self._name, subject=conflict.subject)
                await self._store.catch_up(self.world, conflict.subject)
                if on_conflict is not None:
                    await on_conflict()
                continue
            return landed
        log.warning("decision.gave_up", who=self._name)
        raise GaveUp(f"{self._name or 'a decision'} kept meeting conflicts")

    async def carry_out(self, decide: Callable[[], Iterable[Decision]]) -> bool:
        """`run`, for handlers: True when all landed, False when it gave up."""
        try:
            await self.run(decide)
        except GaveUp:
            return False
        return True

    async def carry_out_merged(
        self, decides: Sequence[Callable[[], Iterable[Decision]]]
    ) -> list[bool]:
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
                log.debug("decision.conflict", who=self._name, subject=conflict.subject)
                await self._store.catch_up(self.world, conflict.subject)
        if not all(done):
            log.warning("decision.gave_up", who=self._name, decisions=done.count(False))
        return done

    async def _merge(
        self, batch: _Batch, decide: Callable[[], Iterable[Decision]], done: list[bool]
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
            self._landed(appends, appended.seqs)
        for instruction in instructions:
            await self._publish(instruction)
        for index in members:
            done[index] = True

    def _landed(self, appends: Sequence[Append], seqs: Sequence[int]) -> None:
        """At debug level, what was decided: each event appended, with its summary (a
        placement and its terms, a queue reason, a charge, a state change)."""
        if not log.is_enabled_for(logging.DEBUG):
            return
        from dante.events.describe import describe

        for item, seq in zip(appends, seqs, strict=False):
            event = item.event
            log.debug(
                "decision.appended",
                who=self._name or None,
                event_type=type(event).__name__,
                seq=seq,
                job_id=getattr(event, "job_id", None),
                summary=describe(event),
            )

    async def _execute(self, decision: Decision) -> Landed:
        seqs: tuple[int, ...] = ()
        if decision.appends:
            appended = await self._store.append(*decision.appends)
            seqs = appended.seqs
            self._landed(decision.appends, seqs)
            if len(seqs) == len(decision.appends):
                for item, seq in zip(decision.appends, seqs, strict=True):
                    self.world.apply_event(item.event, seq)
            else:
                # Landed before, positions unknown: read them back.
                for item in decision.appends:
                    await self._store.catch_up(self.world, item.subject)
        for instruction in decision.instructions:
            await self._publish(instruction)
        return Landed(decision, seqs)


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

    def clashes(self, step: Decision) -> bool:
        if not self.appends:
            return False
        if len(self.appends) + len(step.appends) > _MERGE_LIMIT:
            return True
        return any(a.expected is not None and a.subject in self.written for a in step.appends)

    def add(self, step: Decision) -> None:
        self.appends.extend(step.appends)
        self.instructions.extend(step.instructions)
        self.written.update(a.subject for a in step.appends)

    def take(self) -> tuple[list[int], list[Append], list[Instruction]]:
        taken = (self.members, self.appends, self.instructions)
        self.members, self.appends, self.instructions = [], [], []
        self.written = set()
        return taken
