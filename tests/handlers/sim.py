"""An in-memory log with JetStream's append rules, to drive the real deciders and handlers
through thousands of random steps quickly (property tests), carried out by the platform's
own executor. Integration with a real nats-server is covered by the other tests; this
exercises the decisions themselves."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Coroutine, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

from solders.signature import Signature

from dante.domain.deciders import DECIDERS, Context
from dante.domain.deciders.context import VerifiedPayment
from dante.domain.decision import Decision
from dante.domain.model import World
from dante.domain.rejection import Rejected
from dante.domain.settings import Settings
from dante.events.codec import Recorded
from dante.events.errors import ConcurrencyConflict
from dante.events.records import Append, Appended, Fold
from dante.handlers.billing import Billing
from dante.handlers.executor import Executor, Landed
from dante.handlers.scheduler import Scheduler
from dante.schemas import commands as cmd
from dante.schemas import events as ev
from dante.schemas.chain import TokenTransfer, deposit_memo
from tests.factories import SOLANA

T = TypeVar("T")


#: The simulated chain's dGPU mint and the treasury's token account.
MINT = "4vg6cJjdgvxJiy43Ug2PWt4XcxGBoWzJeu1GRaWoJF5k"
TREASURY_ACCOUNT = "GMzMx648q3JoD74Gyha3P7rjm7RT4QfA6UgszjjvoRLo"


class MemoryLog:
    """The log, in memory, with JetStream's rules: the expected version of each subject is
    checked, and a message id seen before lands nothing again."""

    def __init__(self) -> None:
        self.records: list[Recorded] = []
        self.versions: dict[str, int] = {}
        self.msg_ids: dict[str, int] = {}

    async def append(self, *items: Append) -> Appended:
        if all(i.event.event_id in self.msg_ids for i in items):
            return Appended(tuple(self.msg_ids[i.event.event_id] for i in items), duplicate=True)
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
        return Appended(tuple(seqs))

    async def catch_up(self, fold: Fold, subject: str) -> int:
        _, _, aggregate, aggregate_id = subject.split(".", 3)
        current = fold.version_of_aggregate(aggregate, aggregate_id)
        return sum(
            fold.apply_event(r.event, r.seq)
            for r in self.records
            if r.subject == subject and r.seq > current
        )


def now_or_never(step: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never waits (the executor on the in-memory log) to its end."""
    try:
        step.send(None)
    except StopIteration as done:
        return cast("T", done.value)
    step.close()
    raise AssertionError("the executor waited on the in-memory log")


class Sim:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.world = World()
        self.log = MemoryLog()
        self.now = datetime(2026, 1, 1, tzinfo=UTC)
        self.handlers: list[Any] = [Scheduler(self.settings), Billing(self.settings)]
        self.done = 0  # events handled so far
        self._n = 0

    @property
    def log(self) -> MemoryLog:
        return self._log

    @log.setter
    def log(self, log: MemoryLog) -> None:
        """The log the simulation appends to, through the platform's executor."""
        self._log = log
        self.executor = Executor(log, lambda: self.world, name="sim")

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def _carry_out(self, decide: Callable[[], Iterable[Decision]]) -> list[Landed]:
        """Carry decisions out with the platform's own executor."""
        landed = now_or_never(self.executor.run(decide))
        self.world.position = len(self.log.records)
        return landed

    def command(
        self,
        role: str,
        identity: str,
        command: cmd.Command[Any],
        payment: VerifiedPayment | None = None,
    ) -> Any:
        """Run a command like the service does; return its result or the Rejected."""
        self._n += 1
        ctx = Context(
            role=role,
            identity=identity,
            command_id=f"c{self._n:08d}",
            now=self.now,
            settings=self.settings,
            payment=payment,
        )
        decider, _ = DECIDERS[type(command)]
        try:
            (landed,) = self._carry_out(lambda: [decider(self.world, ctx, command)])
        except Rejected as rejected:
            return rejected
        self.settle()
        return landed.decision.result(self.world)

    def deposit(self, renter: str, amount: int) -> Any:
        """A deposit paid by a confirmed transfer to the treasury, as the service would have
        read it from the chain (the decider gets that as a value)."""
        self._n += 1
        signature = str(Signature(hashlib.sha512(f"pay-{self._n}".encode()).digest()))
        transfer = TokenTransfer(
            signature=signature,
            slot=self._n,
            source_owner=SOLANA,
            source=SOLANA,
            destination=TREASURY_ACCOUNT,
            mint=MINT,
            amount=amount,
            decimals=6,
            memo=deposit_memo(renter),
        )
        payment = VerifiedPayment(
            signature=signature, transfer=transfer, mint=MINT, treasury_account=TREASURY_ACCOUNT
        )
        command = cmd.Deposit(command_id="x" * 8, amount=amount, signature=signature)
        return self.command("renter", renter, command, payment)

    def inject(self, *events: ev.Event) -> None:
        """Append events as another writer would (liveness, an operator)."""
        appends = [Append(event=e, expected=self.world.version_of(e)) for e in events]
        self._carry_out(lambda: [Decision(appends=appends)])
        self.settle()

    def settle(self) -> None:
        while self.done < len(self.log.records):
            recorded = self.log.records[self.done]
            self.done += 1
            for handler in self.handlers:
                self._carry_out(functools.partial(handler.decide, self.world, recorded, self.now))

    def tick(self) -> None:
        for handler in self.handlers:
            self._carry_out(functools.partial(handler.due, self.world, self.now))
        self.settle()

    def events(self) -> list[ev.Event]:
        return [r.event for r in self.log.records]
