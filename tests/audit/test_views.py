"""Comparing two views files as streams, in SQLite's order, without loading either."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from dante.events.store import EventStore
from dante.projections import rebuild
from dante.projections.audit import audit
from dante.projections.audit.views import compare_table
from dante.projections.sqlite import connect
from tests.audit.test_tampering import base

pytestmark = pytest.mark.anyio


async def stream(*rows: tuple[Any, ...]) -> AsyncIterator[tuple[Any, ...]]:
    for row in rows:
        yield row


async def test_rows_are_merged_in_sqlites_order() -> None:
    # SQLite sorts NULL before numbers before text; a merge that compared Python values
    # would fail on None < 1, or call equal rows different.
    live = stream((None, "a"), (1, "a"), (2, None), ("b", 1))
    replay = stream((None, "a"), (1, "b"), (2, None), ("a", 9), ("b", 1))
    diff = await compare_table(live, replay)
    assert (diff.only_live, diff.only_replay) == (1, 2)
    assert diff.live_examples == [(1, "a")]
    assert diff.replay_examples == [(1, "b"), ("a", 9)]
    same = await compare_table(stream((1,), (2,)), stream((1,), (2,)))
    assert same.rows == 0


async def test_missing_and_extra_rows_and_tables_are_counted(
    store: EventStore, tmp_path: Path
) -> None:
    script = base()
    last = await script.append_to(store)
    views = tmp_path / "views.sqlite3"
    await rebuild(store, views)
    db = await connect(views)
    await db.execute("DELETE FROM wallet_ledger WHERE seq IN (1, 2)")
    await db.execute("UPDATE job_records SET requirements_json = '{\"x\": 1}'")
    await db.execute("CREATE TABLE stray (a INTEGER)")
    await db.execute("INSERT INTO stray VALUES (1)")
    await db.close()
    report = await audit(store, views=views)
    assert report.views is not None and report.views.compared
    assert report.views.position == last
    assert report.views.differing_rows == {"job_records": 6, "stray": 1, "wallet_ledger": 2}
    messages = {v.message.split(" differs")[0]: v.message for v in report.violations}
    assert set(messages) == {"job_records", "stray", "wallet_ledger"}
    assert (
        "0 rows only in the live file (none), 2 rows only in the replay"
        in (messages["wallet_ledger"])
    )
    assert "and 1 more" in messages["job_records"] and '{"x": 1}' in messages["job_records"]
