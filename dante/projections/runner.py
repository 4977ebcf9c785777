"""The live runner: keeps the read models up to date with the log, for as long as it runs.

At start it loads every projection's rows and position from SQLite (a projection whose schema
changed starts over from sequence 1), then follows the log from the lowest position + 1 with
an ordered consumer. `wait_for(seq)` lets a caller that just appended read its own writes.
A damaged file is set aside and folded again from the log (`dante.projections.integrity`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
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
from dante.projections.errors import CorruptViews, ProjectionError
from dante.projections.fold import LogFold
from dante.projections.integrity import FileId, damage, file_id, quick_check, set_aside
from dante.projections.projector import POSITIONS, Projector
from dante.projections.sqlite import connect, load, prepare
from dante.projections.tables import Projection

log = structlog.get_logger(__name__)


class ProjectionRunner:
    """Folds the log into the projections' SQLite file, live.

    Run it with `await runner.run()` in a task group (it returns only when cancelled), or as
    `async with ProjectionRunner(store, path) as runner:`, which starts it and waits until
    its views are loaded.

    A damaged file (`dante.projections.integrity`), found at start, by the integrity check
    that runs once it follows the log, or by a failed write, is set aside and the views are
    folded again from sequence 1 into a new file at the same path; waiters wait for the new
    one. A file it rebuilt that is found damaged again is set aside too, and then the runner
    fails rather than loop: whoever runs it restarts it after a delay.
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
        #: Set, and replaced, whenever the fold is dropped (a damaged file) or the run ends.
        self._changed = anyio.Event()
        self._running = False
        self._exit_stack: AsyncExitStack | None = None
        self._task_group: TaskGroup | None = None
        #: Whether the file followed now passed its integrity check (`PRAGMA quick_check`).
        self.checked = False
        #: Where this runner moved damaged files to, oldest first.
        self.set_aside: list[Path] = []

    @property
    def position(self) -> int:
        """The sequence the stored views include (0 until loaded)."""
        return 0 if self._fold is None else self._fold.committed

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Load the views, then follow the log until cancelled."""
        if self._running:
            raise ProjectionError("this runner is already running")
        self._running = True
        started = False

        def loaded() -> None:
            nonlocal started
            if not started:
                started = True
                task_status.started()

        damaged = 0
        try:
            while True:
                try:
                    await self._follow(loaded)
                except CorruptViews as exc:
                    damaged += 1
                    if damaged > 1:
                        raise ProjectionError(
                            f"the views' file {self.db_path} was damaged again after it was "
                            "rebuilt; it is set aside too"
                        ) from exc
        except Exception:
            log.exception("projections.failed", db=str(self.db_path), position=self.position)
            raise
        finally:
            self._running = False
            self._ready.set()
            self._changed.set()

    async def _follow(self, loaded: Callable[[], None]) -> None:
        """Load the file and follow the log into it until cancelled.

        Raises `CorruptViews` once it has set a damaged file aside."""
        db: aiosqlite.Connection | None = None
        self.checked = False
        try:
            db = await connect(self.db_path)
            await prepare(db, self._projections, log_end=await self._store.last_seq())
            projector = Projector(self._projections)
            await load(db, projector)
            fold = LogFold(
                self._store,
                db,
                projector,
                flush_every=self._flush_every,
                flush_ms=self._flush_ms,
            )
            self._fold = fold
            log.info("projections.resume", db=str(self.db_path), position=projector.applied)
            self._ready.set()
            loaded()
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._check)
                    await fold.run(projector.applied + 1, follow=True)
            except BaseExceptionGroup as group:
                if len(group.exceptions) > 1:
                    raise
                # The one failure, as `fold.run` raised it, not wrapped by this task group.
                failure = group.exceptions[0]
                raise failure from failure.__cause__
        except BaseException as exc:
            reason = damage(exc)
            if reason is None:
                raise
            # Moved while still open: SQLite then leaves its -wal alone on close.
            await self._set_aside(reason)
            raise CorruptViews(str(self.db_path), reason) from exc
        finally:
            if db is not None:
                with anyio.CancelScope(shield=True):
                    await db.close()

    async def _set_aside(self, reason: str) -> None:
        found = "while following the log" if self._ready.is_set() else "at start"
        self._drop_fold()
        # All three files or none: a -wal left behind would be replayed onto the new file.
        with anyio.CancelScope(shield=True):
            aside = await set_aside(self.db_path)
        self.set_aside.append(aside)
        log.error(
            "projections.damaged_file_set_aside",
            db=str(self.db_path),
            moved_to=str(aside),
            found=found,
            reason=reason,
            then="folding the views again from sequence 1",
        )

    def _drop_fold(self) -> None:
        """Forget the views of a damaged file: waiters wait for those of its successor."""
        self._fold = None
        self._ready = anyio.Event()
        self._changed.set()
        self._changed = anyio.Event()

    async def _check(self) -> None:
        found = await quick_check(self.db_path)
        if found is not None:
            raise CorruptViews(str(self.db_path), f"PRAGMA quick_check: {found}")
        self.checked = True

    async def wait_for(self, seq: int, timeout: float | None = None) -> None:
        """Return once the stored views include sequence `seq`.

        Raises `TimeoutError` after `timeout` seconds, `ProjectionError` if the runner stops
        before its views include `seq`.
        """
        if seq <= self.position:
            return
        with anyio.fail_after(timeout):
            while True:
                await self._ready.wait()
                fold, changed = self._fold, self._changed
                if fold is None:
                    if not self._running:
                        raise ProjectionError(f"the views stopped before {seq}")
                    continue
                try:
                    await fold.wait_for(seq)
                except ProjectionError:
                    # Stopped: for good, or to fold a new file in place of a damaged one.
                    await changed.wait()
                    if not self._running:
                        raise
                else:
                    return

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
    arrive, so a caller reading its own write waits about that long. When the runner sets a
    damaged file aside and starts a new one, the new one is read from then on.
    """

    def __init__(self, db_path: str | Path, *, poll_s: float = 0.005) -> None:
        self.db_path = Path(db_path)
        self._poll_s = poll_s
        self._db: aiosqlite.Connection | None = None
        #: The file `_db` reads, and a damaged one not to open again.
        self._file: FileId | None = None
        self._damaged: FileId | None = None
        self._lock = anyio.Lock()
        #: The stored position last read (0 before the file has one).
        self.position = 0

    async def _reopen(self) -> bool:
        """Open the file at `db_path` if it is not the one read so far (the runner replaced
        a damaged file). False while there is nothing to read."""
        current = file_id(self.db_path)
        if current is None or current in (self._file, self._damaged):
            # The same file; or none, while it is being replaced: the old until the new is
            # there; or a damaged one, until its successor is there.
            return self._db is not None
        await self._close()
        try:
            db = await connect(self.db_path, readonly=True, create=False)
        except sqlite3.OperationalError:
            return False  # gone again before it could be opened
        except sqlite3.DatabaseError as exc:
            if damage(exc) is None:
                raise
            self._damaged = current
            return False
        self._db, self._file = db, current
        return True

    async def _read(self) -> int | None:
        """The stored position; None while the file or its positions do not exist yet."""
        async with self._lock:
            if not await self._reopen():
                return None
            assert self._db is not None
            try:
                async with self._db.execute(f"SELECT min(seq) FROM {POSITIONS}") as cursor:
                    row = await cursor.fetchone()
            except sqlite3.OperationalError:  # no table yet: the writer is preparing it
                return None
            except sqlite3.DatabaseError as exc:
                if damage(exc) is None:
                    raise
                self._damaged = self._file
                await self._close()
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

    async def _close(self) -> None:
        if self._db is not None:
            db, self._db, self._file = self._db, None, None
            with anyio.CancelScope(shield=True):
                await db.close()

    async def close(self) -> None:
        async with self._lock:
            await self._close()
