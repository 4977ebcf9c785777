"""The live views against the log: a replay to the live file's position must equal it, row
for row.

The live file is read in one read transaction (its rows and its position together) through a
query-only connection, so a running platform may go on writing it. The replay is an ordinary
`rebuild` to that position in a temporary folder, with the same folds as the live runner.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Final

from dante.events.store import EventStore
from dante.projections.audit.report import Findings, ViewsComparison
from dante.projections.projector import POSITIONS
from dante.projections.rebuild import rebuild
from dante.projections.sqlite import connect, dump

Dump = dict[str, list[tuple[Any, ...]]]

_SHOWN: Final = 2


async def read_views(path: Path) -> tuple[dict[str, int], Dump]:
    """Every projection's position and every table's rows, as of one moment."""
    db = await connect(path, readonly=True)
    try:
        await db.execute("BEGIN")
        try:
            async with db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", (POSITIONS,)
            ) as cursor:
                has_positions = await cursor.fetchone() is not None
            positions: dict[str, int] = {}
            if has_positions:
                async with db.execute(f"SELECT projection, seq FROM {POSITIONS}") as cursor:
                    positions = {str(name): int(seq) for name, seq in await cursor.fetchall()}
            rows = await dump(db)
        finally:
            await db.execute("COMMIT")
    finally:
        await db.close()
    return positions, rows


def _show(rows: list[tuple[Any, ...]]) -> str:
    shown = "; ".join(repr(row)[:160] for row in rows[:_SHOWN])
    return shown + (f"; and {len(rows) - _SHOWN} more" if len(rows) > _SHOWN else "")


def differences(live: Dump, replay: Dump) -> dict[str, tuple[list[Any], list[Any]]]:
    """Per table that differs: (rows only in the live file, rows only in the replay)."""
    found: dict[str, tuple[list[Any], list[Any]]] = {}
    for table in sorted(set(live) | set(replay)):
        live_rows, replay_rows = live.get(table, []), replay.get(table, [])
        if live_rows == replay_rows:
            continue
        live_set, replay_set = set(live_rows), set(replay_rows)
        only_live = [row for row in live_rows if row not in replay_set]
        only_replay = [row for row in replay_rows if row not in live_set]
        found[table] = (only_live, only_replay)
    return found


async def compare_views(
    store: EventStore, path: Path, findings: Findings, *, workdir: Path | None = None
) -> ViewsComparison:
    """Compare the live views file at `path` with a replay of the log to its position."""
    positions, live = await read_views(path)
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
        _, replay = await read_views(replayed)
    differing: dict[str, int] = {}
    for table, (only_live, only_replay) in differences(live, replay).items():
        differing[table] = len(only_live) + len(only_replay)
        findings.add(
            "views_differ",
            [position],
            f"{table} differs between {path} and the replay at seq {position}: "
            f"{len(only_live)} rows only in the live file ({_show(only_live) or 'none'}), "
            f"{len(only_replay)} only in the replay ({_show(only_replay) or 'none'})",
        )
    return ViewsComparison(
        file=str(path), position=position, compared=True, differing_rows=differing
    )
