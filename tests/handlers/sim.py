"""An in-memory log with JetStream's append rules, to drive the real deciders and handlers
through thousands of random steps quickly (property tests). Integration with a real
nats-server is covered by the other tests; this exercises the decisions themselves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from dante.domain.deciders import DECIDERS, Context
from dante.domain.model import World
from dante.domain.rejection import Rejected
from dante.domain.settings import Settings
from dante.events.codec import Recorded
from dante.events.errors import ConcurrencyConflict
from dante.events.records import Append
from dante.handlers.billing import Billing
from dante.handlers.scheduler import Scheduler
from dante.schemas import commands as cmd
from dante.schemas import events as ev


class MemoryLog:
    def __init__(self) -> None:
        self.records: list[Recorded] = []
        self.versions: dict[str, int] = {}
        self.msg_ids: dict[str, int] = {}

    def append(self, *items: Append) -> list[int]:
        if all(i.event.event_id in self.msg_ids for i in items):
            return [self.msg_ids[i.event.event_id] for i in items]
        for item in items:
            if item.expected is not None and self.versions.get(item.subject, 0) != item.expected:
                raise ConcurrencyConflict(
                    item.subject, item.expected, self.versions.get(item.subject, 0)
                )
        seqs = []
        for item in items:
            seq = len(self.records) + 1
            self.records.append(
                Recorded(seq=seq, subject=item.subject, stored_at=None, event=item.event)
            )
            self.versions[item.subject] = seq
            self.msg_ids[item.event.event_id] = seq
            seqs.append(seq)
        return seqs


class Sim:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.log = MemoryLog()
        self.world = World()
        self.now = datetime(2026, 1, 1, tzinfo=UTC)
        self.handlers: list[Any] = [Scheduler(self.settings), Billing(self.settings)]
        self.done = 0  # events handled so far
        self._n = 0

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def _append(self, items: list[Append]) -> None:
        seqs = self.log.append(*items)
        for item, seq in zip(items, seqs, strict=True):
            self.world.apply_event(item.event, seq)
        self.world.position = len(self.log.records)

    def command(self, role: str, identity: str, command: cmd.Command) -> Any:
        """Run a command like the service does; return its result or the Rejected."""
        self._n += 1
        ctx = Context(
            role=role,
            identity=identity,
            command_id=f"c{self._n:08d}",
            now=self.now,
            settings=self.settings,
        )
        decider, _ = DECIDERS[type(command)]
        try:
            decision = decider(self.world, ctx, command)
        except Rejected as rejected:
            return rejected
        if decision.appends:
            self._append(decision.appends)
        self.settle()
        return decision.result(self.world)

    def inject(self, *events: ev.Event) -> None:
        """Append events as another writer would (liveness, an operator)."""
        self._append([Append(event=e, expected=self.world.version_of(e)) for e in events])
        self.settle()

    def settle(self) -> None:
        while self.done < len(self.log.records):
            recorded = self.log.records[self.done]
            self.done += 1
            for handler in self.handlers:
                for step in handler.decide(self.world, recorded, self.now):
                    self._append(step.appends)

    def tick(self) -> None:
        for handler in self.handlers:
            for step in handler.due(self.world, self.now):
                self._append(step.appends)
        self.settle()

    def events(self) -> list[ev.Event]:
        return [r.event for r in self.log.records]
