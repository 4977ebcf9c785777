"""A damaged views file: recognising one, checking one, setting one aside.

The views are derived from the log, so a file SQLite cannot read (garbage over its header,
cut short, a page overwritten, a `-wal` of another file replayed onto it) is not repaired: it
is moved aside, with its `-wal` and `-shm`, to `<name>.corrupt-<UTC time>` (kept for whoever
wants to look at it), and the views are folded again from sequence 1.

Three checks find the damage. Opening the file, preparing its tables and loading the
in-memory ones read its header, its schema and every page but the append-only ledger's
(SQLite reports a file shorter than its header says at the first read). `PRAGMA quick_check`
then reads every page, the ledger's too, on a connection of its own while the runner already
follows the log. On the development machine it takes 2 to 3 ms a MB from the page cache and
about 16 ms a MB from disk (a million synthetic events, 60 MB: 0.14 s cached, 1.0 s from
disk; five million, 310 MB: 0.57 s and 4.5 s) where loading the same files takes 0.04 s and
0.17 s: run first, it would hold the start up four to sixteen times longer. And a write that
runs into damage fails with SQLITE_CORRUPT.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import anyio

from dante.projections.errors import CorruptViews
from dante.projections.sqlite import connect

#: What SQLite says of a file it cannot read as a database (error codes, primary part).
_DAMAGE: Final = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
_SIDECARS: Final = ("", "-wal", "-shm")
_REASON_CHARS: Final = 300

#: Which file a path names: (device, inode).
FileId = tuple[int, int]


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
        return
    yield exc
    if exc.__cause__ is not None:
        yield from _leaves(exc.__cause__)


def damage(exc: BaseException) -> str | None:
    """What is wrong with the file, if `exc` (or a failure it groups) says it is damaged.

    Only damage counts: a full disk, an I/O error or a lock would be there again after a
    rebuild."""
    for leaf in _leaves(exc):
        if isinstance(leaf, CorruptViews):
            return leaf.reason
        if isinstance(leaf, sqlite3.DatabaseError):
            code = getattr(leaf, "sqlite_errorcode", None)
            if code is not None and code & 0xFF in _DAMAGE:
                return str(leaf)
    return None


def file_id(path: Path) -> FileId | None:
    """The file `path` names now, or None when there is none (it is being replaced)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


async def quick_check(path: Path) -> str | None:
    """None when SQLite's `PRAGMA quick_check` finds the file sound, else what it found."""
    db = None
    try:
        db = await connect(path, readonly=True, create=False)
        try:
            async with db.execute("PRAGMA quick_check(5)") as cursor:
                rows = await cursor.fetchall()
        except anyio.get_cancelled_exc_class():
            await db.interrupt()  # a check of a big file must not hold a shutdown up
            raise
    except sqlite3.DatabaseError as exc:
        found = damage(exc)
        if found is None:
            raise
        return found
    finally:
        if db is not None:
            with anyio.CancelScope(shield=True):
                await db.close()
    found = " ".join(" ".join(str(row[0]).split()) for row in rows)
    if found == "ok":
        return None
    return found if len(found) <= _REASON_CHARS else found[: _REASON_CHARS - 1] + "…"


def _taken(base: Path) -> bool:
    return any(os.path.lexists(f"{base}{suffix}") for suffix in _SIDECARS)


async def set_aside(path: Path, *, now: datetime | None = None) -> Path:
    """Move the file at `path` and its `-wal` and `-shm` to `<path>.corrupt-<UTC time>`.

    Returns the new name of the main file. The main file goes first, so that a reader
    opening `path` meanwhile finds nothing rather than the old file with a new journal;
    readers that have the old file open go on reading it until they see it was replaced
    (SQLite checkpoints and deletes a journal on close only if its file was not moved).
    """
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    base = path.with_name(f"{path.name}.corrupt-{stamp}")
    aside, n = base, 1
    while _taken(aside):
        n += 1
        aside = base.with_name(f"{base.name}.{n}")
    for suffix in _SIDECARS:
        try:
            await anyio.Path(f"{path}{suffix}").rename(f"{aside}{suffix}")
        except FileNotFoundError:
            continue
    return aside
