"""The projections' SQLite file: connecting, creating or replacing tables, loading, writing.

One file holds every projection; each owns the tables named with its prefix and one row of
`projection_positions` (its last applied sequence and its schema version). A projection whose
stored schema version differs from its code's has its tables dropped and is rebuilt from
sequence 1. Rows and positions are written in one transaction, so after any crash the stored
rows are exactly those of the stored position.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import aiosqlite
import anyio
import structlog

from dante.projections.projector import POSITIONS, Batch, Projector
from dante.projections.tables import Projection

_CREATE_POSITIONS: Final = (
    f"CREATE TABLE IF NOT EXISTS {POSITIONS} (\n"
    "  projection TEXT NOT NULL PRIMARY KEY,\n"
    "  seq INTEGER NOT NULL,\n"
    "  schema_version INTEGER NOT NULL\n"
    ") WITHOUT ROWID"
)
_LOAD_CHUNK: Final = 10_000

log = structlog.get_logger(__name__)


def _existing(path: str | Path) -> str:
    """A URI that opens the file only if it exists (`mode=rw`, not `rwc`). absolute(), not
    resolve(): the -wal and -shm SQLite derives from the name must be the writer's."""
    return f"{Path(path).absolute().as_uri()}?mode=rw"


async def connect(
    path: str | Path, *, readonly: bool = False, create: bool = True
) -> aiosqlite.Connection:
    """Open the projections' file: WAL, synchronous=NORMAL, transactions only when asked for.

    Without `create`, a file that is not there is not created (`sqlite3.OperationalError`):
    a reader must never make an empty file where the runner is about to put the views.
    """
    if create:
        db = await aiosqlite.connect(path, isolation_level=None)
    else:
        db = await aiosqlite.connect(_existing(path), isolation_level=None, uri=True)
    try:
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute("PRAGMA busy_timeout=10000")
        await db.execute("PRAGMA cache_size=-65536")
        if readonly:
            await db.execute("PRAGMA query_only=ON")
    except BaseException:
        with anyio.CancelScope(shield=True):
            await db.close()
        raise
    return db


async def _rollback(db: aiosqlite.Connection) -> None:
    """Roll back, keeping the failure that caused it: after some errors (a damaged file, a
    full disk) SQLite has rolled back already, and ROLLBACK itself would fail."""
    with contextlib.suppress(sqlite3.Error):
        await db.execute("ROLLBACK")


async def _tables_with_prefix(db: aiosqlite.Connection, prefix: str) -> list[str]:
    like = prefix.replace("_", r"\_") + r"\_%"
    async with db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE ? ESCAPE '\\'",
        (like,),
    ) as cursor:
        return [str(row[0]) for row in await cursor.fetchall()]


async def prepare(
    db: aiosqlite.Connection,
    projections: Sequence[Projection[Any]],
    *,
    log_end: int | None = None,
) -> dict[str, int]:
    """Create missing tables, replace those of a changed schema; return each stored position.

    A projection stored beyond `log_end` (the log's last sequence) was folded from another
    log, one since deleted and started anew: it starts over too.
    """
    await db.execute("BEGIN IMMEDIATE")
    try:
        await db.execute(_CREATE_POSITIONS)
        async with db.execute(f"SELECT projection, seq, schema_version FROM {POSITIONS}") as cur:
            stored = {str(name): (int(seq), int(v)) for name, seq, v in await cur.fetchall()}
        positions: dict[str, int] = {}
        for projection in projections:
            seq, version = stored.get(projection.name, (0, None))
            beyond = log_end is not None and seq > log_end
            if version == projection.schema_version and not beyond:
                positions[projection.name] = seq
                continue
            if version is not None:
                log.warning(
                    "projections.start_over",
                    projection=projection.name,
                    reason="beyond the end of the log" if beyond else "schema changed",
                    position=seq,
                    log_end=log_end,
                    schema_version=(version, projection.schema_version),
                )
            for name in await _tables_with_prefix(db, projection.prefix):
                await db.execute(f"DROP TABLE {name}")
            for table in projection.tables:
                for statement in table.create_sql():
                    await db.execute(statement)
            await db.execute(
                f"INSERT OR REPLACE INTO {POSITIONS} VALUES (?, 0, ?)",
                (projection.name, projection.schema_version),
            )
            positions[projection.name] = 0
        await db.execute("COMMIT")
    except BaseException:
        with anyio.CancelScope(shield=True):
            await _rollback(db)
        raise
    return positions


async def load(db: aiosqlite.Connection, projector: Projector) -> None:
    """Read every stored row back into the projector's views and set their positions.

    Rows and positions are read in one read transaction, so they match.
    """
    await db.execute("BEGIN")
    try:
        async with db.execute(f"SELECT projection, seq FROM {POSITIONS}") as cursor:
            stored = {str(name): int(seq) for name, seq in await cursor.fetchall()}
        for projection in projector.projections:
            for table in projection.tables:
                if table.append_only:
                    continue
                async with db.execute(table.select_sql) as cursor:
                    while chunk := await cursor.fetchmany(_LOAD_CHUNK):
                        projector.load(
                            projection.name, table, [table.from_db(values) for values in chunk]
                        )
    finally:
        await db.execute("COMMIT")
    projector.start_at(stored)


async def write(db: aiosqlite.Connection, batch: Batch) -> None:
    """Write one batch in one transaction.

    Shielded from cancellation: a transaction is never left half done on the connection.
    """
    with anyio.CancelScope(shield=True):
        await db.execute("BEGIN")
        try:
            for sql, params in batch.statements:
                await db.execute(sql, params)
        except BaseException:
            await _rollback(db)
            raise
        await db.execute("COMMIT")


async def positions(db: aiosqlite.Connection) -> dict[str, int]:
    """The stored position of every projection."""
    async with db.execute(f"SELECT projection, seq FROM {POSITIONS}") as cursor:
        return {str(name): int(seq) for name, seq in await cursor.fetchall()}


async def dump(db: aiosqlite.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows in primary-key order: two files hold the same views iff equal."""
    async with db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%' "
        "ORDER BY name"
    ) as cursor:
        names = [str(row[0]) for row in await cursor.fetchall()]
    tables: dict[str, list[tuple[Any, ...]]] = {}
    for name in names:
        async with db.execute(f"SELECT count(*) FROM pragma_table_info('{name}')") as cursor:
            row = await cursor.fetchone()
        order = ", ".join(str(i) for i in range(1, int(row[0]) + 1)) if row else "1"
        async with db.execute(f"SELECT * FROM {name} ORDER BY {order}") as cursor:
            tables[name] = [tuple(values) for values in await cursor.fetchall()]
    return tables
