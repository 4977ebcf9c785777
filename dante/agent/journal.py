"""The agent's journal: what happened to each job attempt on this machine, crash-safe.

It is how the agent keeps its two promises across a crash or a restart: an assignment is
never lost (a dispatch message is acknowledged only once its attempt is recorded here) and
never run twice (an attempt recorded as starting is never started again). Every usage tick
is recorded here before it is sent, and marked once the platform has it, so a tick is
neither lost nor counted twice.

SQLite (stdlib) in WAL mode with `synchronous=FULL`: each change is one transaction, flushed
to disk before the call returns; a write torn by a crash is rolled back when the file is next
opened. Calls are synchronous and short (one small transaction); the agent makes a few per
job step and one per tick.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, Literal

import msgspec

from dante.schemas.dispatch import Assignment
from dante.schemas.values import FileRef, UsageTick

Phase = Literal[
    "received",  # journaled, not yet accepted
    "accepted",  # the platform knows we take it
    "inputs",  # its input files are in its work folder
    "starting",  # handed to the executor: from here on it is never started again
    "started",  # the executor said it runs
    "finished",  # it ended; the outcome is recorded, not yet reported
    "reported",  # the platform has the outcome: done
    "declined",  # we declined it: done
    "dropped",  # the platform took it away, or refused it: nothing to report, done
]
PHASES: Final[tuple[Phase, ...]] = (
    "received",
    "accepted",
    "inputs",
    "starting",
    "started",
    "finished",
    "reported",
    "declined",
    "dropped",
)
DONE: Final[frozenset[Phase]] = frozenset({"reported", "declined", "dropped"})
#: Phases in which the job may have been running when the agent stopped.
RAN: Final[frozenset[Phase]] = frozenset({"starting", "started"})

TickState = Literal["pending", "sent", "dropped"]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS attempts (
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    phase TEXT NOT NULL,
    assignment BLOB NOT NULL,
    received_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    stop_code TEXT,
    stop_reason TEXT NOT NULL DEFAULT '',
    pgid INTEGER,
    started_at TEXT,
    start_reported INTEGER NOT NULL DEFAULT 0,
    outcome BLOB,
    results BLOB,
    note TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (job_id, attempt)
);
CREATE TABLE IF NOT EXISTS ticks (
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    tick BLOB NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    PRIMARY KEY (job_id, attempt, seq)
);
CREATE INDEX IF NOT EXISTS ticks_pending ON ticks (job_id, attempt, state, seq);
"""

Key = tuple[str, int]


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """How an attempt ended on this machine: what `ReportJobFinished` will say."""

    exit_code: int | None = None
    error: str = ""
    #: Given back to the platform to run elsewhere (the agent shut down or restarted).
    interrupted: bool = False
    #: Upload what `out/` holds before reporting.
    upload: bool = True


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One attempt as journaled."""

    job_id: str
    attempt: int
    phase: Phase
    assignment: Assignment
    received_at: datetime
    stop_code: str | None
    stop_reason: str
    pgid: int | None
    started_at: datetime | None
    start_reported: bool
    outcome: Outcome | None
    results: FileRef | None
    note: str

    @property
    def key(self) -> Key:
        return (self.job_id, self.attempt)

    @property
    def done(self) -> bool:
        return self.phase in DONE


_assignment = msgspec.json.Decoder(Assignment)
_outcome = msgspec.json.Decoder(Outcome)
_file_ref = msgspec.json.Decoder(FileRef)
_tick = msgspec.json.Decoder(UsageTick)
_encode = msgspec.json.encode


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


class JournalError(Exception):
    """The journal could not be read or written (disk full, corrupt file)."""


class Journal:
    """The attempts and usage ticks of one agent's work directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, isolation_level=None, timeout=10)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open the journal {path}: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise JournalError(f"journal write failed: {exc}") from exc

    # ── attempts ────────────────────────────────────────────────────────────────────────

    def receive(self, assignment: Assignment) -> bool:
        """Record a new assignment; False if this attempt is already journaled."""
        now = _now()
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO attempts"
                " (job_id, attempt, phase, assignment, received_at, updated_at)"
                " VALUES (?, ?, 'received', ?, ?, ?)",
                (assignment.job_id, assignment.attempt, _encode(assignment), now, now),
            )
            return cursor.rowcount == 1

    def get(self, key: Key) -> AttemptRecord | None:
        row = self._db.execute(_SELECT + " WHERE job_id = ? AND attempt = ?", key).fetchone()
        return None if row is None else _record(row)

    def open_attempts(self) -> list[AttemptRecord]:
        """Attempts not done yet, oldest first."""
        rows = self._db.execute(
            _SELECT + " WHERE phase NOT IN ('reported', 'declined', 'dropped')"
            " ORDER BY received_at, job_id, attempt"
        ).fetchall()
        return [_record(row) for row in rows]

    def set_phase(self, key: Key, phase: Phase, *, note: str | None = None) -> None:
        self._update(key, "UPDATE attempts SET phase = ?, note = coalesce(?, note)", phase, note)

    def record_stop(self, key: Key, code: str, reason: str) -> None:
        """Remember that the platform asked to stop the attempt (the first request wins)."""
        with self._transaction() as db:
            db.execute(
                "UPDATE attempts SET stop_code = coalesce(stop_code, ?),"
                " stop_reason = CASE WHEN stop_code IS NULL THEN ? ELSE stop_reason END,"
                " updated_at = ? WHERE job_id = ? AND attempt = ?",
                (code, reason, _now(), *key),
            )

    def record_pgid(self, key: Key, pgid: int) -> None:
        self._update(key, "UPDATE attempts SET pgid = ?", pgid)

    def record_started(self, key: Key, at: datetime) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE attempts SET phase = 'started', started_at = ?, updated_at = ?"
                " WHERE job_id = ? AND attempt = ?",
                (at.isoformat(), _now(), *key),
            )

    def record_start_reported(self, key: Key) -> None:
        self._update(key, "UPDATE attempts SET start_reported = ?", 1)

    def record_outcome(self, key: Key, outcome: Outcome) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE attempts SET phase = 'finished', outcome = ?, updated_at = ?"
                " WHERE job_id = ? AND attempt = ?",
                (_encode(outcome), _now(), *key),
            )

    def record_results(self, key: Key, results: FileRef) -> None:
        self._update(key, "UPDATE attempts SET results = ?", _encode(results))

    def _update(self, key: Key, update: str, *values: object) -> None:
        """Run `update` (an UPDATE of attempts whose values come last) on one attempt."""
        with self._transaction() as db:
            db.execute(
                update + ", updated_at = ? WHERE job_id = ? AND attempt = ?",
                (*values, _now(), *key),
            )

    def forget_before(self, cutoff: timedelta) -> int:
        """Delete attempts done longer than `cutoff` ago, with their ticks."""
        before = (datetime.now(UTC) - cutoff).isoformat()
        with self._transaction() as db:
            old = db.execute(
                "SELECT job_id, attempt FROM attempts WHERE phase IN ('reported', 'declined',"
                " 'dropped') AND updated_at < ?",
                (before,),
            ).fetchall()
            for job_id, attempt in old:
                db.execute("DELETE FROM ticks WHERE job_id = ? AND attempt = ?", (job_id, attempt))
                db.execute(
                    "DELETE FROM attempts WHERE job_id = ? AND attempt = ?", (job_id, attempt)
                )
            return len(old)

    # ── usage ticks ─────────────────────────────────────────────────────────────────────

    def add_tick(self, key: Key, tick: UsageTick) -> None:
        """Record a tick before it is sent; a tick number is recorded once."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO ticks (job_id, attempt, seq, tick) VALUES (?, ?, ?, ?)",
                (*key, tick.seq, _encode(tick)),
            )

    def last_tick(self, key: Key) -> int:
        row = self._db.execute(
            "SELECT max(seq) FROM ticks WHERE job_id = ? AND attempt = ?", key
        ).fetchone()
        return int(row[0] or 0)

    def pending_ticks(self, key: Key, limit: int) -> list[UsageTick]:
        rows = self._db.execute(
            "SELECT tick FROM ticks WHERE job_id = ? AND attempt = ? AND state = 'pending'"
            " ORDER BY seq LIMIT ?",
            (*key, limit),
        ).fetchall()
        return [_tick.decode(row[0]) for row in rows]

    def ticks(self, key: Key) -> list[tuple[UsageTick, TickState]]:
        rows = self._db.execute(
            "SELECT tick, state FROM ticks WHERE job_id = ? AND attempt = ? ORDER BY seq", key
        ).fetchall()
        return [(_tick.decode(tick), state) for tick, state in rows]

    def mark_ticks(self, key: Key, seqs: Sequence[int], state: TickState) -> None:
        with self._transaction() as db:
            db.executemany(
                "UPDATE ticks SET state = ? WHERE job_id = ? AND attempt = ? AND seq = ?",
                [(state, *key, seq) for seq in seqs],
            )


_SELECT: Final = (
    "SELECT job_id, attempt, phase, assignment, received_at, stop_code, stop_reason, pgid,"
    " started_at, start_reported, outcome, results, note FROM attempts"
)


def _record(row: tuple[object, ...]) -> AttemptRecord:
    (
        job_id,
        attempt,
        phase,
        assignment,
        received_at,
        stop_code,
        stop_reason,
        pgid,
        started_at,
        start_reported,
        outcome,
        results,
        note,
    ) = row
    assert isinstance(job_id, str)
    assert isinstance(attempt, int)
    assert isinstance(phase, str)
    assert phase in PHASES
    assert isinstance(assignment, bytes)
    assert isinstance(received_at, str)
    return AttemptRecord(
        job_id=job_id,
        attempt=attempt,
        phase=phase,
        assignment=_assignment.decode(assignment),
        received_at=datetime.fromisoformat(received_at),
        stop_code=stop_code if isinstance(stop_code, str) else None,
        stop_reason=str(stop_reason or ""),
        pgid=pgid if isinstance(pgid, int) else None,
        started_at=_time(started_at if isinstance(started_at, str) else None),
        start_reported=bool(start_reported),
        outcome=_outcome.decode(outcome) if isinstance(outcome, bytes) else None,
        results=_file_ref.decode(results) if isinstance(results, bytes) else None,
        note=str(note or ""),
    )
