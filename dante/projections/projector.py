"""The projector folds events into the in-memory views and gathers what changed into batches.

It does no I/O: the runner and `rebuild` feed it events and write its batches to SQLite. A
batch holds, for every table, the rows to upsert, the keys to delete and the rows to append,
and the position of every projection, so one transaction writes them all together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from dante.projections.tables import Added, Changed, Key, Projection, Row, Table, View
from dante.schemas.events import Event

POSITIONS: Final = "projection_positions"
UPSERT_POSITION: Final = (
    f"INSERT OR REPLACE INTO {POSITIONS} (projection, seq, schema_version) VALUES (?, ?, ?)"
)

_astuple: Final = msgspec.structs.astuple


@dataclass(frozen=True, slots=True)
class Batch:
    """Everything to write in one transaction, in order: (SQL, rows of parameters)."""

    statements: list[tuple[str, list[tuple[Any, ...]]]]
    #: The sequence every projection is at once this batch is written.
    position: int
    events: int


@dataclass(slots=True)
class _Slot:
    projection: Projection[Any]
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
            for change in slot.projection.evolve(slot.view, seq, event):
                if isinstance(change, Changed):
                    slot.dirty[change.table].add(change.key)
                elif isinstance(change, Added):
                    slot.added[change.table].append(change.row)
            slot.position = seq
        self.applied = seq
        self.pending += 1

    def take(self) -> Batch:
        """What changed since the last batch, as SQL to run in one transaction."""
        statements: list[tuple[str, list[tuple[Any, ...]]]] = []
        positions: list[tuple[Any, ...]] = []
        for slot in self._slots:
            for table in slot.projection.tables:
                if table.append_only:
                    rows = slot.added[table.name]
                    if rows:
                        statements.append((table.upsert_sql, [_astuple(row) for row in rows]))
                        slot.added[table.name] = []
                    continue
                keys = slot.dirty[table.name]
                if not keys:
                    continue
                upserts: list[tuple[Any, ...]] = []
                deletes: list[tuple[Any, ...]] = []
                for key in keys:
                    row = slot.view.get(table.name, key)
                    if row is None:
                        deletes.append(table.key_params(key))
                    else:
                        upserts.append(_astuple(row))
                if deletes:
                    statements.append((table.delete_sql, deletes))
                if upserts:
                    statements.append((table.upsert_sql, upserts))
                slot.dirty[table.name] = set()
            positions.append((slot.projection.name, slot.position, slot.projection.schema_version))
        statements.append((UPSERT_POSITION, positions))
        batch = Batch(statements=statements, position=self.applied, events=self.pending)
        self.pending = 0
        return batch
