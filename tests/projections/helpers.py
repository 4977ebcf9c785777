"""Helpers of the projection tests: fold events in memory, or into a real SQLite file."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from nats.aio.client import Client as NATS

from dante.events.records import Append
from dante.events.store import EventStore
from dante.events.streams import ensure_log
from dante.events.subjects import STREAM
from dante.projections.catalog import PROJECTIONS
from dante.projections.projector import Projector
from dante.projections.sqlite import connect, dump, prepare, write
from dante.projections.tables import Changes, Projection, View
from dante.schemas.events import Event

V = TypeVar("V", bound=View)


def fold(projection: Projection[V], events: Iterable[Event]) -> V:
    """The view after `events`, folded in memory with sequences 1, 2, ..."""
    view = projection.empty()
    for seq, event in enumerate(events, start=1):
        projection.evolve(view, seq, event)
    return view


def fold_changes(projection: Projection[V], events: list[Event]) -> tuple[V, Changes]:
    """The view after `events`, and what the last one changed."""
    view = fold(projection, events[:-1])
    return view, projection.evolve(view, len(events), events[-1])


async def build(path: Path, events: Iterable[Event], *, batch: int = 7) -> None:
    """Fold `events` into a SQLite file without a log, in batches of `batch` events."""
    db = await connect(path)
    try:
        await prepare(db, PROJECTIONS)
        projector = Projector(PROJECTIONS)
        for seq, event in enumerate(events, start=1):
            projector.apply(seq, event)
            if projector.pending >= batch:
                await write(db, projector.take())
        await write(db, projector.take())
    finally:
        await db.close()


async def dump_file(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    db = await connect(path)
    try:
        return await dump(db)
    finally:
        await db.close()


async def fresh_log(nc: NATS) -> EventStore:
    """An empty log on the test's server (a property test's examples share one server)."""
    js = nc.jetstream()
    await ensure_log(js)
    await js.delete_stream(STREAM)
    await ensure_log(js)
    return EventStore(nc)


async def append_batches(store: EventStore, batches: Iterable[list[Event]]) -> int:
    """Append each batch atomically, as the platform does; return the last sequence."""
    last = 0
    for batch in batches:
        last = (await store.append(*(Append(event=event) for event in batch))).last
    return last
