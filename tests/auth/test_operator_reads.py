"""The operator, who may read the log only with direct gets, replays and audits it exactly as
the platform's own connection (with an ordered consumer) does."""

from __future__ import annotations

from pathlib import Path

import pytest

from dante.events.pipeline import Pipeline
from dante.events.records import Append
from dante.events.store import EventStore
from dante.events.subjects import CLIENT_API_PREFIX
from dante.projections import rebuild
from dante.projections.audit import audit
from tests.auth.conftest import Secured
from tests.factories import deposit
from tests.projections.helpers import dump_file

pytestmark = pytest.mark.anyio


async def test_the_operator_replays_and_audits_with_direct_gets(
    secured: Secured, tmp_path: Path
) -> None:
    platform = secured.platform
    for n in range(4):
        batch = [deposit(f"renter{n}{i}", 1, event_id=f"d-{n}-{i}") for i in range(700)]
        await platform.store.append(*(Append(event=e) for e in batch[:3]))
        await Pipeline(platform.store).append_all(Append(event=e) for e in batch[3:])
    last = await platform.store.last_seq()
    operator = EventStore(await secured.operator(), api_prefix=CLIENT_API_PREFIX)

    mine = [m async for chunk in platform.store.read_messages() for m in chunk]
    theirs = [m async for chunk in operator.read_messages() for m in chunk]
    assert [m.seq for m in theirs] == list(range(1, last + 1))
    assert [(m.seq, m.subject, m.batch_id is None, m.committed, m.data) for m in theirs] == [
        (m.seq, m.subject, m.batch_id is None, m.committed, m.data) for m in mine
    ]
    middle = [item[0] async for chunk in operator.read_chunks(5, stop=1500) for item in chunk]
    assert middle == list(range(5, 1501))

    await rebuild(platform.store, tmp_path / "platform.sqlite3")
    await rebuild(operator, tmp_path / "operator.sqlite3")
    assert await dump_file(tmp_path / "operator.sqlite3") == await dump_file(
        tmp_path / "platform.sqlite3"
    )
    report = await audit(operator, views=platform.views.db_path)
    assert report.ok, report.violations
    assert report.events == last
