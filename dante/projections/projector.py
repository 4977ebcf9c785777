"""The projector folds events into the in-memory views and gathers what changed into batches.

It does no I/O: the runner and `rebuild` feed it events and write its batches to SQLite. A
batch holds, for every table, the rows to upsert, the keys to delete and the rows to append
(each as one JSON array: see `dante.projections.tables`), and the position of every
projection, so one transaction writes them all together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, cast

import msgspec

from dante.projections.tables import Added, Changed, Changes, Key, Projection, Row, Table, View
from dante.schemas.events import Event

POSITIONS: Final = "projection_positions"
UPSERT_POSITION: Final = (
    f"INSERT OR REPLACE INTO {POSITIONS} (projection, seq, schema_version) VALUES (?, ?, ?)"
)

_encoder: Final = msgspec.json.Encoder()


def _json(rows: Sequence[object]) -> str:
    # Text, not bytes: SQLite 3.45+ reads a blob given to json_each() as its binary JSONB.
    return _encoder.encode(rows).decode()


@dataclass(frozen=True, slots=True)
class Batch:
    """Everything to write in one transaction, in order: (SQL, its parameters)."""

    statements: list[tuple[str, tuple[Any, ...]]]
    #: The sequence every projection is at once this batch is written.
    position: int
    events: int


@dataclass(slots=True)
class _Slot:
    projection: Projection[Any]
    evolve: Callable[[Any, int, Event], Changes]
    view: View
    position: int
    dirty: dict[str, set[Key]] = field(default_factory=dict)
    added: dict[str, list[Row]] = field(default_factory=dict)


class Projector:
    """Folds events into several projections, each from its own position on."""

    def __init__(self, projections: Sequence[Projection[Any]]) -> None:
        self._slots = [
            _Slot(
                projection=projection,
                evolve=projection.evolve,
                view=projection.empty(),
                position=0,
                dirty={t.name: set() for t in projection.tables},
                added={t.name: [] for t in projection.tables if t.append_only},
            )
            for projection in projections
        ]
        #: The highest sequence every projection has applied.
        self.applied = 0
        #: Events applied since the last batch was taken.
        self.pending = 0

    @property
    def projections(self) -> list[Projection[Any]]:
        return [slot.projection for slot in self._slots]

    def view(self, name: str) -> View:
        return next(slot.view for slot in self._slots if slot.projection.name == name)

    def start_at(self, positions: dict[str, int]) -> None:
        """Say where each projection's stored rows stand (its view must already hold them)."""
        for slot in self._slots:
            slot.position = positions.get(slot.projection.name, 0)
        self.applied = min((slot.position for slot in self._slots), default=0)

    def load(self, name: str, table: Table[Any], rows: Sequence[Row]) -> None:
        """Put stored rows of one table back into its projection's view."""
        view = self.view(name)
        for row in rows:
            view.put(table.name, table.key_of(row), row)

    def apply(self, seq: int, event: Event) -> None:
        """Fold one event into every projection that has not applied it yet."""
        for slot in self._slots:
            if seq <= slot.position:
                continue
            changes = slot.evolve(slot.view, seq, event)
            if changes:
                dirty, added = slot.dirty, slot.added
                for change in changes:
                    # The hot path of a rebuild: compare classes rather than isinstance().
                    if change.__class__ is Changed:
                        dirty[change[0]].add(change[1])
                    else:
                        added[change[0]].append(cast("Added", change).row)
            slot.position = seq
        self.applied = seq
        self.pending += 1

    def take(self) -> Batch:
        """What changed since the last batch, as SQL to run in one transaction."""
        statements: list[tuple[str, tuple[Any, ...]]] = []
        positions: list[tuple[Any, ...]] = []
        for slot in self._slots:
            for table in slot.projection.tables:
                if table.append_only:
                    rows = slot.added[table.name]
                    if rows:
                        statements.append((table.upsert_sql, (_json(rows),)))
                        slot.added[table.name] = []
                    continue
                keys = slot.dirty[table.name]
                if not keys:
                    continue
                upserts: list[Row] = []
                deletes: list[tuple[Any, ...]] = []
                for key in keys:
                    row = slot.view.get(table.name, key)
                    if row is None:
                        deletes.append(table.key_values(key))
                    else:
                        upserts.append(row)
                if deletes:
                    statements.append((table.delete_sql, (_json(deletes),)))
                if upserts:
                    statements.append((table.upsert_sql, (_json(upserts),)))
                slot.dirty[table.name] = set()
            positions.append((slot.projection.name, slot.position, slot.projection.schema_version))
        statements.extend((UPSERT_POSITION, position) for position in positions)
        batch = Batch(statements=statements, position=self.applied, events=self.pending)
        self.pending = 0
        return batch
