"""Folding the log into SQLite: reading, folding and writing overlap.

Three tasks share the work. The reader takes events off the log's ordered consumer, in chunks
of whatever arrived meanwhile, and decodes them into an inbox. The folder applies whatever the
inbox holds to the in-memory views and takes a batch every `flush_every` events, or
`flush_ms` after the first unwritten change, or at once when someone waits for a sequence it
has applied. The writer commits batches (rows and positions in one transaction) in a worker
thread while the next events are read and folded.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from datetime import datetime
from typing import cast

import aiosqlite
import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from dante.events.codec import decode_event
from dante.events.store import EventStore
from dante.projections.errors import ProjectionError
from dante.projections.projector import Batch, Projector
from dante.projections.sqlite import write
from dante.schemas.codec import DecodeError
from dante.schemas.events import Event

OnCommit = Callable[[Batch], None]


class LogFold:
    """Reads the log into a projector and commits its batches to one SQLite connection."""

    def __init__(
        self,
        store: EventStore,
        db: aiosqlite.Connection,
        projector: Projector,
        *,
        flush_every: int = 1000,
        flush_ms: float = 20.0,
        max_buffered: int = 10_000,
        on_commit: OnCommit | None = None,
    ) -> None:
        self._store = store
        self._db = db
        self._projector = projector
        self._flush_every = flush_every
        self._flush_s = flush_ms / 1000
        self._max_buffered = max_buffered
        self._on_commit = on_commit
        self._inbox: list[tuple[int, Event]] = []
        self._wake = anyio.Event()
        self._room = anyio.Event()
        self._room.set()
        self._ended = False
        self._waiters: list[tuple[int, anyio.Event]] = []
        self._failure: ProjectionError | None = None
        self._stopped = False
        #: The sequence every projection's stored rows are at.
        self.committed = projector.applied
        #: Events committed by this fold.
        self.written = 0

    async def run(
        self,
        start: int,
        *,
        stop: int | None = None,
        follow: bool = False,
        until: datetime | None = None,
    ) -> None:
        """Fold events from `start` to `stop` (or on and on, with `follow`); stop before the
        first event that happened after `until`. Returns once all it folded is committed."""
        send, receive = anyio.create_memory_object_stream[Batch](1)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._read, start, stop, follow, until)
                tg.start_soon(self._write, receive)
                async with send:
                    await self._fold(send)
        finally:
            # Whoever still waits learns that what they wait for will not come from here.
            self._stopped = True
            for _, done in self._waiters:
                done.set()
        if self._failure is not None:
            raise self._failure

    async def wait_for(self, seq: int) -> None:
        """Return once the stored rows include sequence `seq`.

        Raises `ProjectionError` if the fold stops before they do.
        """
        if seq <= self.committed:
            return
        if not self._stopped:
            waiter = (seq, anyio.Event())
            self._waiters.append(waiter)
            self._wake.set()
            try:
                await waiter[1].wait()
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        if seq > self.committed:
            raise ProjectionError(f"the views stopped at {self.committed}, before {seq}")

    async def _read(
        self, start: int, stop: int | None, follow: bool, until: datetime | None
    ) -> None:
        try:
            # `read_chunks` is an async generator: closing it unsubscribes its consumer.
            chunks = cast(
                "AsyncGenerator[list[tuple[int, str, datetime | None, bytes]]]",
                self._store.read_chunks(start, stop=stop, follow=follow),
            )
            async with aclosing(chunks) as arriving:
                async for chunk in arriving:
                    for seq, _subject, _stored_at, data in chunk:
                        try:
                            event = decode_event(data)
                        except DecodeError as exc:
                            # Keep what came before it: fold and commit that, then fail.
                            self._failure = ProjectionError(f"event {seq} cannot be read: {exc}")
                            self._failure.__cause__ = exc
                            return
                        if until is not None and event.at > until:
                            return
                        self._inbox.append((seq, event))
                    self._wake.set()
                    if len(self._inbox) >= self._max_buffered:
                        if self._room.is_set():
                            self._room = anyio.Event()
                        await self._room.wait()
        finally:
            self._ended = True
            self._wake.set()

    def _urgent(self) -> bool:
        applied = self._projector.applied
        return any(seq <= applied for seq, _ in self._waiters)

    async def _fold(self, send: MemoryObjectSendStream[Batch]) -> None:
        projector = self._projector
        due = math.inf
        while True:
            if self._inbox:
                records, self._inbox = self._inbox, []
                self._room.set()
                for seq, event in records:
                    projector.apply(seq, event)
                    if projector.pending >= self._flush_every:
                        await send.send(projector.take())
                        due = math.inf
                if projector.pending and due == math.inf:
                    due = anyio.current_time() + self._flush_s
                continue
            if projector.pending and (self._ended or self._urgent() or anyio.current_time() >= due):
                await send.send(projector.take())
                due = math.inf
                continue
            if self._ended:
                return
            self._wake = anyio.Event()
            with anyio.move_on_after(due - anyio.current_time()):
                await self._wake.wait()

    async def _write(self, receive: MemoryObjectReceiveStream[Batch]) -> None:
        async with receive:
            async for batch in receive:
                await write(self._db, batch)
                self.committed = batch.position
                self.written += batch.events
                reached = [w for w in self._waiters if w[0] <= batch.position]
                if reached:
                    self._waiters = [w for w in self._waiters if w[0] > batch.position]
                    for _, done in reached:
                        done.set()
                if self._on_commit is not None:
                    self._on_commit(batch)
