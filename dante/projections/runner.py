"""The live runner: keeps the read models up to date with the log, for as long as it runs.

At start it loads every projection's rows and position from SQLite (a projection whose schema
changed starts over from sequence 1), then follows the log from the lowest position + 1 with
an ordered consumer. `wait_for(seq)` lets a caller that just appended read its own writes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiosqlite
import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from dante.events.store import EventStore
from dante.projections.catalog import PROJECTIONS
from dante.projections.errors import ProjectionError
from dante.projections.fold import LogFold
from dante.projections.projector import POSITIONS, Projector
from dante.projections.sqlite import connect, load, prepare
from dante.projections.tables import Projection

log = structlog.get_logger(__name__)


class ProjectionRunner:
    """Folds the log into the projections' SQLite file, live.

    Run it with `await runner.run()` in a task group (it returns only when cancelled), or as
    `async with ProjectionRunner(store, path) as runner:`, which starts it and waits until
    its views are loaded.
    """

    def __init__(
        self,
        store: EventStore,
        db_path: str | Path,
        *,
        flush_every: int = 1000,
        flush_ms: float = 20.0,
        projections: Sequence[Projection[Any]] = PROJECTIONS,
    ) -> None:
        self.db_path = Path(db_path)
        self._store = store
        self._flush_every = flush_every
        self._flush_ms = flush_ms
        self._projections = tuple(projections)
        self._fold: LogFold | None = None
        self._ready = anyio.Event()
        self._running = False
        self._exit_stack: AsyncExitStack | None = None
        self._task_group: TaskGroup | None = None

    @property
    def position(self) -> int:
        """The sequence the stored views include (0 until loaded)."""
        return 0 if self._fold is None else self._fold.committed

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Load the views, then follow the log until cancelled."""
        if self._running:
            raise ProjectionError("this runner is already running")
        db = await connect(self.db_path)
        self._running = True
        try:
            await prepare(db, self._projections, log_end=await self._store.last_seq())
            projector = Projector(self._projections)
            await load(db, projector)
            self._fold = LogFold(
                self._store,
                db,
                projector,
                flush_every=self._flush_every,
                flush_ms=self._flush_ms,
            )
            log.info("projections.resume", db=str(self.db_path), position=projector.applied)
            self._ready.set()
            task_status.started()
            await self._fold.run(projector.applied + 1, follow=True)
        except Exception:
            log.exception("projections.failed", db=str(self.db_path), position=self.position)
            raise
        finally:
            self._running = False
            with anyio.CancelScope(shield=True):
                await db.close()

    async def wait_for(self, seq: int, timeout: float | None = None) -> None:
        """Return once the stored views include sequence `seq`.

        Raises `TimeoutError` after `timeout` seconds, `ProjectionError` if the runner stops
        before its views include `seq`.
        """
        if seq <= self.position:
            return
        with anyio.fail_after(timeout):
            await self._ready.wait()
            assert self._fold is not None
            await self._fold.wait_for(seq)

    async def __aenter__(self) -> Self:
        async with AsyncExitStack() as stack:
            self._task_group = await stack.enter_async_context(anyio.create_task_group())
            await self._task_group.start(self.run)
            self._exit_stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._exit_stack is not None
        assert self._task_group is not None
        self._task_group.cancel_scope.cancel()
        stack, self._exit_stack, self._task_group = self._exit_stack, None, None
        return await stack.__aexit__(exc_type, exc, tb)


class StoredViews:
    """The views another process keeps, followed through their file: what the queries of a
    process without a `ProjectionRunner` wait on (`dante up` keeps the views in its
    `dante serve handlers views` child).

    `wait_for(seq)` reads the position stored with the rows (the lowest projection's) every
    `poll_s` until it includes `seq`. The writer commits at least every 20 ms while events
    arrive, so a caller reading its own write waits about that long.
    """

    def __init__(self, db_path: str | Path, *, poll_s: float = 0.005) -> None:
        self.db_path = Path(db_path)
        self._poll_s = poll_s
        self._db: aiosqlite.Connection | None = None
        self._lock = anyio.Lock()
        #: The stored position last read (0 before the file has one).
        self.position = 0

    async def _read(self) -> int | None:
        """The stored position; None while the file or its positions do not exist yet."""
        async with self._lock:
            if self._db is None:
                if not self.db_path.exists():
                    return None
                self._db = await connect(self.db_path, readonly=True)
            try:
                async with self._db.execute(f"SELECT min(seq) FROM {POSITIONS}") as cursor:
                    row = await cursor.fetchone()
            except sqlite3.OperationalError:  # no table yet: the writer is preparing it
                return None
        if row is None or row[0] is None:
            return None
        self.position = int(row[0])
        return self.position

    async def wait_for(self, seq: int, timeout: float | None = None) -> None:
        """Return once the stored views include sequence `seq` (and exist, for 0).

        Raises `TimeoutError` after `timeout` seconds."""
        with anyio.fail_after(timeout):
            while True:
                position = await self._read()
                if position is not None and position >= seq:
                    return
                await anyio.sleep(self._poll_s)

    async def close(self) -> None:
        async with self._lock:
            if self._db is not None:
                await self._db.close()
                self._db = None
