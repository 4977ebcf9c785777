"""The agent's journal: attempts and ticks survive a crash, including one mid-write."""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from dante.agent.journal import Journal, JournalError, Outcome
from dante.schemas.dispatch import Assignment
from dante.schemas.values import FileRef, GpuSample, ScriptPayload, UsageTick
from tests.factories import NOW

KEY = ("job-1", 1)


def assignment(job_id: str = "job-1", attempt: int = 1) -> Assignment:
    return Assignment(
        job_id=job_id,
        attempt=attempt,
        renter="alice",
        payload=ScriptPayload(script="print(1)"),
        gpu_indices=[0, 1],
        max_duration_s=60,
        price=500_000,
        assigned_at=NOW,
        seq=7,
    )


def tick(seq: int, ms: int = 1000) -> UsageTick:
    return UsageTick(seq=seq, ended_at=NOW, samples=[GpuSample(index=0, gpu_ms=ms)])


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "journal.sqlite3")
    yield j
    j.close()


def test_an_assignment_is_recorded_once(journal: Journal) -> None:
    assert journal.receive(assignment()) is True
    assert journal.receive(assignment()) is False
    record = journal.get(KEY)
    assert record is not None
    assert (record.phase, record.assignment, record.outcome) == ("received", assignment(), None)
    assert journal.receive(assignment(attempt=2)) is True
    assert [r.key for r in journal.open_attempts()] == [("job-1", 1), ("job-1", 2)]


def test_phases_stop_outcome_and_results_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    journal = Journal(path)
    journal.receive(assignment())
    journal.set_phase(KEY, "accepted")
    journal.record_stop(KEY, "cancelled", "by the renter")
    journal.record_stop(KEY, "revoked", "later")  # the first stop wins
    journal.record_pgid(KEY, 4242)
    journal.record_started(KEY, NOW)
    journal.record_start_reported(KEY)
    journal.record_outcome(KEY, Outcome(exit_code=3, error="boom"))
    ref = FileRef(object="results/job-1/1.tar.gz", path="out", size=3, sha256="a" * 64)
    journal.record_results(KEY, ref)
    journal.close()

    again = Journal(path)
    record = again.get(KEY)
    assert record is not None
    assert record.phase == "finished"
    assert (record.stop_code, record.stop_reason) == ("cancelled", "by the renter")
    assert (record.pgid, record.started_at, record.start_reported) == (4242, NOW, True)
    assert record.outcome == Outcome(exit_code=3, error="boom")
    assert record.results == ref
    again.set_phase(KEY, "reported", note="done")
    assert again.open_attempts() == []
    assert again.get(KEY).note == "done"  # type: ignore[union-attr]
    again.close()


def test_ticks_are_recorded_once_and_marked(journal: Journal) -> None:
    journal.receive(assignment())
    for seq in (1, 2, 3):
        journal.add_tick(KEY, tick(seq))
    with pytest.raises(JournalError):
        journal.add_tick(KEY, tick(2))  # a tick number is never recorded twice
    assert journal.last_tick(KEY) == 3
    assert [t.seq for t in journal.pending_ticks(KEY, 2)] == [1, 2]
    journal.mark_ticks(KEY, [1, 2], "sent")
    journal.mark_ticks(KEY, [3], "dropped")
    assert journal.pending_ticks(KEY, 100) == []
    assert [(t.seq, state) for t, state in journal.ticks(KEY)] == [
        (1, "sent"),
        (2, "sent"),
        (3, "dropped"),
    ]
    assert journal.last_tick(("job-2", 1)) == 0


def test_old_done_attempts_are_forgotten(journal: Journal) -> None:
    journal.receive(assignment("job-1"))
    journal.receive(assignment("job-2"))
    journal.add_tick(("job-1", 1), tick(1))
    journal.set_phase(("job-1", 1), "reported")
    assert journal.forget_before(timedelta(days=30)) == 0
    assert journal.forget_before(timedelta(seconds=-1)) == 1
    assert journal.get(("job-1", 1)) is None
    assert journal.ticks(("job-1", 1)) == []
    assert journal.get(("job-2", 1)) is not None  # not done: kept whatever its age


WRITER = textwrap.dedent(
    """
    import sys
    from dante.agent.journal import Journal
    from tests.agent.test_daemon_journal import assignment, tick

    journal = Journal(__import__("pathlib").Path(sys.argv[1]))
    journal.receive(assignment())
    seq = 0
    while True:
        seq += 1
        journal.add_tick(("job-1", 1), tick(seq))
        print(seq, flush=True)
    """
)


def _write_until_killed(path: Path, at_least: int) -> int:
    """Run a writer of ticks, kill -9 it mid-stream; the last tick it saw committed."""
    last = 0
    with subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    ) as process:
        assert process.stdout is not None
        deadline = time.monotonic() + 60
        while last < at_least and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            last = int(line)
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert last >= at_least, "the writer did not get going"
    return last


def _check(path: Path) -> list[int]:
    journal = Journal(path)
    try:
        seqs = [t.seq for t, _ in journal.ticks(KEY)]
        assert journal.get(KEY) is not None
    finally:
        journal.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert seqs == list(range(1, len(seqs) + 1)), "ticks are a gapless prefix"
    return seqs


def test_killed_mid_write_every_committed_tick_is_there(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    committed = _write_until_killed(path, at_least=30)
    seqs = _check(path)
    # Everything the writer saw committed survived (it may have committed one more).
    assert len(seqs) >= committed

    # And the journal goes on from there.
    journal = Journal(path)
    journal.add_tick(KEY, tick(len(seqs) + 1))
    journal.close()
    assert _check(path)[-1] == len(seqs) + 1


def test_a_torn_write_ahead_log_loses_only_its_torn_end(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    _write_until_killed(path, at_least=30)
    wal = path.with_name(path.name + "-wal")
    if not wal.exists() or wal.stat().st_size < 8192:
        pytest.skip("the WAL was checkpointed away before the kill")
    # A crash in the middle of a write: the file ends part-way through a frame, with junk.
    with wal.open("r+b") as handle:
        handle.truncate(wal.stat().st_size - 1000)
        handle.seek(0, 2)
        handle.write(b"\xde\xad" * 300)
    seqs = _check(path)
    assert len(seqs) >= 1
