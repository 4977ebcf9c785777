"""The live views against the log: a replay to the live file's position must equal it, row
for row.

The live file is read through a query-only connection inside one read transaction, opened
before its position is read and closed after the last row is compared, so the position and
every row are of one moment while a running platform goes on writing (WAL). The replay is an
ordinary `rebuild` to that position in a temporary folder, with the same folds as the live
runner. Tables are compared as two streams in primary-key order, merged, so neither file is
ever held in memory.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import aiosqlite

from dante.events.store import EventStore
from dante.projections.audit.report import Findings, ViewsComparison
from dante.projections.projector import POSITIONS
from dante.projections.rebuild import rebuild
from dante.projections.sqlite import connect

Row = tuple[Any, ...]

_SHOWN: Final = 2
_FETCH: Final = 5000
_RANKS: Final = {type(None): 0, int: 1, float: 1, str: 2, bytes: 3}


def _order(row: Row) -> tuple[tuple[int, Any], ...]:
    """SQLite's order of rows (NULL, numbers, text, blobs; text bytewise, which for UTF-8
    is code point order), so Python merges what SQLite sorted."""
    return tuple((_RANKS[type(value)], 0 if value is None else value) for value in row)


async def _tables(db: aiosqlite.Connection) -> dict[str, int]:
    """Every table and its number of columns."""
    async with db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%'"
    ) as cursor:
        names = [str(row[0]) for row in await cursor.fetchall()]
    found: dict[str, int] = {}
    for name in names:
        async with db.execute(f"SELECT count(*) FROM pragma_table_info('{name}')") as cursor:
            row = await cursor.fetchone()
        found[name] = int(row[0]) if row else 0
    return found


async def _rows(db: aiosqlite.Connection, table: str, columns: int) -> AsyncIterator[Row]:
    order = ", ".join(str(i) for i in range(1, columns + 1))
    async with db.execute(f"SELECT * FROM {table} ORDER BY {order}") as cursor:
        while chunk := await cursor.fetchmany(_FETCH):
            for row in chunk:
                yield tuple(row)


async def _positions(db: aiosqlite.Connection) -> dict[str, int]:
    async with db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", (POSITIONS,)
    ) as cursor:
        if await cursor.fetchone() is None:
            return {}
    async with db.execute(f"SELECT projection, seq FROM {POSITIONS}") as cursor:
        return {str(name): int(seq) for name, seq in await cursor.fetchall()}


@dataclass
class TableDiff:
    """Rows found in only one of the two files (counted; the first few kept)."""

    only_live: int = 0
    only_replay: int = 0
    live_examples: list[Row] = field(default_factory=list)
    replay_examples: list[Row] = field(default_factory=list)

    def live(self, row: Row) -> None:
        self.only_live += 1
        if len(self.live_examples) < _SHOWN:
            self.live_examples.append(row)

    def replay(self, row: Row) -> None:
        self.only_replay += 1
        if len(self.replay_examples) < _SHOWN:
            self.replay_examples.append(row)

    @property
    def rows(self) -> int:
        return self.only_live + self.only_replay


async def _next(rows: AsyncIterator[Row]) -> Row | None:
    return await anext(rows, None)


async def compare_table(live: AsyncIterator[Row], replay: AsyncIterator[Row]) -> TableDiff:
    """Merge two streams of rows in SQLite's order; what is in only one of them."""
    diff = TableDiff()
    a, b = await _next(live), await _next(replay)
    while a is not None or b is not None:
        if b is None or (a is not None and _order(a) < _order(b)):
            assert a is not None
            diff.live(a)
            a = await _next(live)
        elif a is None or _order(b) < _order(a):
            diff.replay(b)
            b = await _next(replay)
        else:
            a, b = await _next(live), await _next(replay)
    return diff


async def compare_files(
    live: aiosqlite.Connection, replay: aiosqlite.Connection
) -> dict[str, TableDiff]:
    """Per table that differs between two open files, how."""
    live_tables, replay_tables = await _tables(live), await _tables(replay)
    found: dict[str, TableDiff] = {}
    for table in sorted(set(live_tables) | set(replay_tables)):
        live_rows = _rows(live, table, live_tables[table]) if table in live_tables else _none()
        replay_rows = (
            _rows(replay, table, replay_tables[table]) if table in replay_tables else _none()
        )
        diff = await compare_table(live_rows, replay_rows)
        if diff.rows:
            found[table] = diff
    return found


async def _none() -> AsyncIterator[Row]:
    return
    yield


def _show(count: int, examples: list[Row], where: str) -> str:
    shown = "; ".join(repr(row)[:160] for row in examples)
    more = f"; and {count - len(examples)} more" if count > len(examples) else ""
    return f"{count} rows only in the {where} ({shown or 'none'}{more})"


async def compare_views(
    store: EventStore, path: Path, findings: Findings, *, workdir: Path | None = None
) -> ViewsComparison:
    """Compare the live views file at `path` with a replay of the log to its position."""
    live = await connect(path, readonly=True)
    try:
        await live.execute("BEGIN")
        try:
            return await _compare(store, path, live, findings, workdir)
        finally:
            await live.execute("COMMIT")
    finally:
        await live.close()


async def _compare(
    store: EventStore,
    path: Path,
    live: aiosqlite.Connection,
    findings: Findings,
    workdir: Path | None,
) -> ViewsComparison:
    positions = await _positions(live)
    if not positions:
        return ViewsComparison(
            file=str(path), position=0, compared=False, note="the file holds no projections"
        )
    if len(set(positions.values())) != 1:
        return ViewsComparison(
            file=str(path),
            position=min(positions.values()),
            compared=False,
            note=f"its projections stand at different positions ({positions}): one is "
            "being rebuilt; compare again once it has caught up",
        )
    position = next(iter(positions.values()))
    last = await store.last_seq()
    if position > last:
        findings.add(
            "views_ahead",
            [last],
            f"the live views in {path} stand at seq {position}, beyond the end of the log "
            f"(seq {last}): they were not folded from this log",
        )
        return ViewsComparison(file=str(path), position=position, compared=False)
    with tempfile.TemporaryDirectory(prefix="dante-audit-", dir=workdir) as tmp:
        replayed = Path(tmp) / "replay.sqlite3"
        await rebuild(store, replayed, to_seq=position)
        replay = await connect(replayed, readonly=True)
        try:
            differing = await compare_files(live, replay)
        finally:
            await replay.close()
    for table, diff in differing.items():
        findings.add(
            "views_differ",
            [position],
            f"{table} differs between {path} and the replay at seq {position}: "
            + _show(diff.only_live, diff.live_examples, "live file")
            + ", "
            + _show(diff.only_replay, diff.replay_examples, "replay"),
        )
    return ViewsComparison(
        file=str(path),
        position=position,
        compared=True,
        differing_rows={table: diff.rows for table, diff in differing.items()},
    )
