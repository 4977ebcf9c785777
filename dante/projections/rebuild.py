"""Rebuild the read models from the log into a fresh SQLite file, up to a sequence or a time.

The same projections and the same fold as the live runner, so a rebuild to sequence N holds
exactly the rows the live views held at N. It writes into `<file>.partial` and renames it
into place when done, so a failed or interrupted rebuild never leaves a half-built file
behind; the result is an ordinary projections file a runner can go on from.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosqlite
import anyio
import msgspec

from dante.collector import collector_paused
from dante.events.store import EventStore
from dante.projections.catalog import PROJECTIONS
from dante.projections.fold import LogFold
from dante.projections.projector import Batch, Projector
from dante.projections.sqlite import connect, prepare
from dante.projections.tables import Projection

#: Called after every committed batch with (events folded, events to fold at most).
Progress = Callable[[int, int], None]


class RebuildReport(msgspec.Struct, frozen=True, kw_only=True):
    """What a rebuild did: where it stopped, how many events it folded, the rows per table."""

    position: int
    events: int
    rows: dict[str, int]
    seconds: float


def _sidecars(path: Path) -> list[anyio.Path]:
    return [anyio.Path(path.with_name(path.name + suffix)) for suffix in ("", "-wal", "-shm")]


async def _remove(path: Path) -> None:
    for file in _sidecars(path):
        await file.unlink(missing_ok=True)


async def _count_rows(
    db: aiosqlite.Connection, projections: Sequence[Projection[Any]]
) -> dict[str, int]:
    rows: dict[str, int] = {}
    for projection in projections:
        for table in projection.tables:
            async with db.execute(f"SELECT count(*) FROM {table.name}") as cursor:
                count = await cursor.fetchone()
            rows[table.name] = int(count[0]) if count else 0
    return rows


async def rebuild(
    store: EventStore,
    db_path: str | Path,
    *,
    to_seq: int | None = None,
    until: datetime | None = None,
    progress: Progress | None = None,
    replace: bool = False,
    flush_every: int = 20_000,
    projections: Sequence[Projection[Any]] = PROJECTIONS,
) -> RebuildReport:
    """Fold the log from sequence 1 into a new file at `db_path`.

    Stops after `to_seq` (default: the log's last sequence when called) and before the first
    event that happened after `until`: the result is the views at one position of the log.
    Refuses to overwrite an existing file unless `replace`.
    """
    target = Path(db_path)
    if await anyio.Path(target).exists() and not replace:
        raise FileExistsError(f"{target} exists; pass replace=True to overwrite it")
    partial = target.with_name(target.name + ".partial")
    await _remove(partial)
    started = time.perf_counter()
    last = await store.last_seq()
    stop = last if to_seq is None else min(to_seq, last)
    projector = Projector(projections)

    def committed(_batch: Batch) -> None:
        if progress is not None:
            progress(fold.written, stop)

    db = await connect(partial)
    try:
        # A crash loses nothing here: the partial file is thrown away and built again.
        await db.execute("PRAGMA synchronous=OFF")
        await prepare(db, projections)
        fold = LogFold(
            store, db, projector, flush_every=flush_every, flush_ms=1e9, on_commit=committed
        )
        if stop >= 1:
            with collector_paused():
                await fold.run(1, stop=stop, until=until)
        rows = await _count_rows(db, projections)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await db.close()
            await _remove(partial)
        raise
    await db.close()
    await _remove(target)
    await anyio.Path(partial).rename(target)
    return RebuildReport(
        position=fold.committed,
        events=fold.written,
        rows=rows,
        seconds=round(time.perf_counter() - started, 3),
    )
