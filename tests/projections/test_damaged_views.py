"""A damaged views file is set aside, kept, and the views folded again from the log.

Every file here is made by the real projections from a real log on a real nats-server, and
then damaged the ways files are: garbage over the header, cut short, a page in the middle
overwritten, a `-wal` of another file next to it.
"""

from __future__ import annotations

import os
import random
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from dante.events.pipeline import Pipeline
from dante.events.records import Append
from dante.events.store import EventStore
from dante.projections import ProjectionError, ProjectionRunner, Views, balance, rebuild
from dante.projections.errors import CorruptViews
from dante.projections.integrity import damage, quick_check, set_aside
from dante.projections.runner import StoredViews
from tests.projections.helpers import dump_file
from tests.projections.histories import ACTIONS, History

pytestmark = pytest.mark.anyio

SET_ASIDE = "projections.damaged_file_set_aside"
#: Busier than the property tests' histories: mostly usage and the money it moves.
BUSY = (*ACTIONS, *["usage"] * 8, *["deposit"] * 3, "start", "assign")


def busy_history(steps: int = 2500, seed: int = 15) -> History:
    """About 2,600 events for 2,500 steps, a views file of some 100 pages."""
    draw = random.Random(seed)
    drawn = [
        (draw.choice(BUSY), draw.randrange(2**16), draw.randrange(2**16)) for _ in range(steps)
    ]
    return History(prefix=f"d{seed}").play(drawn)


async def append_history(store: EventStore, history: History) -> int:
    await Pipeline(store).append_all(Append(event=event) for event in history.events)
    return await store.last_seq()


async def folded(store: EventStore, path: Path, last: int) -> None:
    """Views of the log up to `last` at `path`, made by the live runner, as the platform."""
    async with ProjectionRunner(store, path) as runner:
        await runner.wait_for(last, timeout=30)


async def settled(runner: ProjectionRunner, last: int) -> None:
    """Until the runner's file passed its integrity check and holds `last`."""
    with anyio.fail_after(30):
        while not runner.checked:
            await anyio.sleep(0.01)
        await runner.wait_for(last)


def overwrite_header(path: Path) -> None:
    with path.open("r+b") as file:
        file.write(b"\xde\xad\xbe\xef" * 25)


def cut_in_half(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def ledger_leaf_pages(path: Path) -> list[int]:
    db = sqlite3.connect(path)
    try:
        rows = db.execute(
            "SELECT pageno FROM dbstat WHERE name = 'wallet_ledger' AND pagetype = 'leaf' "
            "ORDER BY pageno"
        ).fetchall()
    finally:
        db.close()
    return [int(row[0]) for row in rows]


def overwrite_a_ledger_page(path: Path) -> None:
    """Garbage over a leaf of the ledger in the middle: a page loading the views never reads."""
    pages = ledger_leaf_pages(path)
    assert len(pages) > 8
    with path.open("r+b") as file:
        file.seek((pages[len(pages) // 2] - 1) * 4096)
        file.write(b"\xab" * 4096)


DAMAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "garbage over the header": (overwrite_header, "at start"),
    "cut in half": (cut_in_half, "at start"),
    "a ledger page overwritten": (overwrite_a_ledger_page, "while following the log"),
}


def aside_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".corrupt-" in p.name)


@pytest.mark.parametrize("kind", list(DAMAGES))
async def test_a_damaged_file_is_set_aside_kept_and_folded_again_from_the_log(
    store: EventStore, tmp_path: Path, kind: str
) -> None:
    spoil, found = DAMAGES[kind]
    last = await append_history(store, busy_history())
    assert last > 2000
    path = tmp_path / "views.sqlite3"
    await folded(store, path, last)
    assert not Path(f"{path}-wal").exists()  # closed cleanly: the damage is all in the file
    spoil(path)
    damaged = path.read_bytes()

    with capture_logs() as lines:
        async with ProjectionRunner(store, path) as runner:
            await settled(runner, last)
            # Events that arrive meanwhile land in the new file too.
            more = await append_history(store, busy_history(steps=200, seed=16))
            await runner.wait_for(more, timeout=30)

    await rebuild(store, tmp_path / "rebuilt.sqlite3")
    assert await dump_file(path) == await dump_file(tmp_path / "rebuilt.sqlite3")
    [aside] = runner.set_aside
    assert aside.parent == tmp_path
    assert aside.name.startswith("views.sqlite3.corrupt-")
    assert aside.read_bytes() == damaged  # kept as it was found
    # With its -wal and -shm, if the runner had it open when it found the damage.
    assert aside.name in aside_files(tmp_path)
    assert set(aside_files(tmp_path)) <= {f"{aside.name}{end}" for end in ("", "-wal", "-shm")}
    logged = [line for line in lines if line["event"] == SET_ASIDE]
    assert len(logged) == 1, lines
    assert logged[0]["db"] == str(path)
    assert logged[0]["moved_to"] == str(aside)
    assert logged[0]["found"] == found
    assert logged[0]["log_level"] == "error"
    assert not [line for line in lines if line["event"] == "projections.failed"]


async def test_a_wal_of_another_file_is_found_and_the_views_folded_again(
    store: EventStore, tmp_path: Path
) -> None:
    # A copy of the views at a third of the log, and the -wal the same views had past two
    # thirds: restored from a backup, say, next to the journal of the file it replaced.
    batches = busy_history().batches
    third = len(batches) // 3
    path = tmp_path / "views.sqlite3"
    backup = b""
    for part in (batches[:third], batches[third : 2 * third]):
        await Pipeline(store).append_all(Append(event=e) for batch in part for e in batch)
        await folded(store, path, await store.last_seq())
        backup = backup or path.read_bytes()
    await Pipeline(store).append_all(
        Append(event=e) for batch in batches[2 * third :] for e in batch
    )
    last = await store.last_seq()
    async with ProjectionRunner(store, path, flush_every=50) as runner:
        await runner.wait_for(last, timeout=30)
        wal = Path(f"{path}-wal").read_bytes()
    assert len(wal) > 16 * 4096
    path.write_bytes(backup)
    Path(f"{path}-wal").write_bytes(wal)

    with capture_logs() as lines:
        async with ProjectionRunner(store, path) as runner:
            await settled(runner, last)
    await rebuild(store, tmp_path / "rebuilt.sqlite3")
    assert await dump_file(path) == await dump_file(tmp_path / "rebuilt.sqlite3")
    [aside] = runner.set_aside
    assert Path(f"{aside}-wal").read_bytes()[:32] == wal[:32]  # its journal went with it
    assert len([line for line in lines if line["event"] == SET_ASIDE]) == 1


async def test_a_wal_of_garbage_is_ignored_and_nothing_is_set_aside(
    store: EventStore, tmp_path: Path
) -> None:
    last = await append_history(store, busy_history())
    path = tmp_path / "views.sqlite3"
    await folded(store, path, last)
    Path(f"{path}-wal").write_bytes(random.Random(1).randbytes(50_000))
    with capture_logs() as lines:
        async with ProjectionRunner(store, path) as runner:
            await settled(runner, last)
    # SQLite checks a journal's header and checksums; one that fails them is not replayed.
    assert runner.set_aside == []
    assert aside_files(tmp_path) == []
    assert not [line for line in lines if line["event"] == SET_ASIDE]
    await rebuild(store, tmp_path / "rebuilt.sqlite3")
    assert await dump_file(path) == await dump_file(tmp_path / "rebuilt.sqlite3")


async def test_a_sound_file_passes_its_check_and_the_runner_resumes_it(
    store: EventStore, tmp_path: Path
) -> None:
    last = await append_history(store, busy_history(steps=600))
    path = tmp_path / "views.sqlite3"
    await folded(store, path, last)
    before = await dump_file(path)
    assert await quick_check(path) is None
    with capture_logs() as lines:
        async with ProjectionRunner(store, path) as runner:
            assert runner.position == last  # resumed, not folded again
            await settled(runner, last)
    assert runner.set_aside == []
    assert not [line for line in lines if line["event"] == SET_ASIDE]
    assert await dump_file(path) == before


def spoil_the_ledger_under_its_writer(path: Path) -> None:
    """Garbage over the ledger's root page, in the file itself, while a runner writes it.

    Its pages are checkpointed into the file first (a page still in the -wal would be read
    from there), which also makes the runner read them from the file again."""
    db = sqlite3.connect(path)
    try:
        busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
        [root] = db.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'wallet_ledger'"
        ).fetchone()
    finally:
        db.close()
    with path.open("r+b") as file:
        file.seek((int(root) - 1) * 4096)
        file.write(b"\xab" * 4096)


async def until_set_aside(runner: ProjectionRunner, count: int = 1) -> None:
    with anyio.fail_after(30):
        while len(runner.set_aside) < count:
            await anyio.sleep(0.01)


async def test_damage_a_write_runs_into_sets_the_file_aside_and_folds_again(
    store: EventStore, tmp_path: Path
) -> None:
    # Sound at start and checked; damaged while the runner follows the log: the next write
    # to the ledger fails with SQLITE_CORRUPT, and the runner starts over.
    last = await append_history(store, busy_history())
    path = tmp_path / "views.sqlite3"
    with capture_logs() as lines:
        async with ProjectionRunner(store, path) as runner:
            await settled(runner, last)
            spoil_the_ledger_under_its_writer(path)
            more = await append_history(store, busy_history(steps=400, seed=17))
            await until_set_aside(runner)
            await settled(runner, more)
    [logged] = [line for line in lines if line["event"] == SET_ASIDE]
    assert logged["found"] == "while following the log"
    assert "malformed" in logged["reason"]
    await rebuild(store, tmp_path / "rebuilt.sqlite3")
    assert await dump_file(path) == await dump_file(tmp_path / "rebuilt.sqlite3")


async def balances(path: Path, wallets: list[str]) -> dict[str, Any]:
    async with await Views.open(path) as views:
        return {wallet: await balance(views, wallet) for wallet in wallets}


async def test_readers_of_a_damaged_file_go_on_with_its_successor(
    store: EventStore, tmp_path: Path
) -> None:
    history = busy_history()
    wallets = sorted(history.available)
    last = await append_history(store, history)
    path = tmp_path / "views.sqlite3"
    await folded(store, path, last)
    expected = await balances(path, wallets)
    stored = StoredViews(path)
    try:
        await stored.wait_for(last, timeout=5)
        async with await Views.open(path) as views:
            # Readers that have the file open when it is found damaged and set aside.
            assert {w: await balance(views, w) for w in wallets} == expected
            overwrite_a_ledger_page(path)
            async with ProjectionRunner(store, path) as runner:
                await until_set_aside(runner)
                await settled(runner, last)
                assert {w: await balance(views, w) for w in wallets} == expected
                await stored.wait_for(last, timeout=5)
                # Their old connections are closed now; the new file's journal must have
                # survived that (SQLite deletes a -wal by name, unless its file moved).
                more = await append_history(store, busy_history(steps=400, seed=18))
                await runner.wait_for(more, timeout=30)
                await stored.wait_for(more, timeout=5)
                assert stored.position == more
                await rebuild(store, tmp_path / "rebuilt.sqlite3")
                now = await balances(tmp_path / "rebuilt.sqlite3", wallets)
                assert now != expected
                assert {w: await balance(views, w) for w in wallets} == now
                assert await balances(path, wallets) == now
    finally:
        await stored.close()
    assert await quick_check(path) is None
    assert await dump_file(path) == await dump_file(tmp_path / "rebuilt.sqlite3")


async def test_a_reader_waits_while_the_file_is_damaged_and_reads_its_successor(
    store: EventStore, tmp_path: Path
) -> None:
    last = await append_history(store, busy_history(steps=600))
    path = tmp_path / "views.sqlite3"
    await folded(store, path, last)
    overwrite_header(path)
    stored = StoredViews(path)
    try:
        # No views to read in a file SQLite cannot open: a waiter waits, and does not fail.
        with pytest.raises(TimeoutError):
            await stored.wait_for(1, timeout=0.2)
        async with ProjectionRunner(store, path):
            await stored.wait_for(last, timeout=30)
    finally:
        await stored.close()


async def test_a_rebuilt_file_damaged_again_fails_the_runner_instead_of_looping(
    store: EventStore, tmp_path: Path
) -> None:
    last = await append_history(store, busy_history(steps=600))
    path = tmp_path / "views.sqlite3"
    await folded(store, path, last)
    overwrite_header(path)
    runner = ProjectionRunner(store, path)

    async def damage_it_again() -> None:
        await until_set_aside(runner)
        await settled(runner, last)
        spoil_the_ledger_under_its_writer(path)  # a failing disk, say
        await append_history(store, busy_history(steps=200, seed=19))

    with capture_logs() as lines:
        async with anyio.create_task_group() as tg:
            tg.start_soon(damage_it_again)
            with pytest.raises(ProjectionError, match="damaged again"):
                await runner.run()
    # Both files were set aside; whoever runs the runner restarts it after a delay.
    assert len(runner.set_aside) == 2
    assert aside_files(tmp_path) == sorted(
        {p.name for a in runner.set_aside for p in tmp_path.glob(f"{a.name}*")}
    )
    assert len([line for line in lines if line["event"] == SET_ASIDE]) == 2
    assert not path.exists()
    async with ProjectionRunner(store, path) as again:
        await settled(again, last)
    await rebuild(store, tmp_path / "rebuilt.sqlite3")
    assert await dump_file(path) == await dump_file(tmp_path / "rebuilt.sqlite3")


def test_only_damage_counts_as_damage(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"\xab" * 8192)
    sound, db = sqlite3.connect(":memory:"), sqlite3.connect(garbage)
    try:
        with pytest.raises(sqlite3.OperationalError) as other:
            sound.execute("SELECT * FROM nowhere")
        with pytest.raises(sqlite3.DatabaseError) as unreadable:
            db.execute("SELECT * FROM sqlite_master")
    finally:
        sound.close()
        db.close()
    # A missing table (or a full disk, a lock) would be there again after a rebuild.
    assert damage(other.value) is None
    assert damage(unreadable.value) == "file is not a database"
    checked = CorruptViews("views.sqlite3", "PRAGMA quick_check: Page 7 is never used")
    # Found inside the groups task groups raise, and behind what a failure was raised from.
    assert damage(BaseExceptionGroup("x", [ValueError(), checked])) == checked.reason
    wrapped = ProjectionError("while writing")
    wrapped.__cause__ = ExceptionGroup("y", [unreadable.value])
    assert damage(wrapped) == "file is not a database"
    assert damage(ValueError()) is None


async def test_set_aside_names_the_time_and_never_overwrites_an_earlier_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "views.sqlite3"
    at = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    names: list[str] = []
    for n in range(3):
        path.write_text(f"main {n}")
        Path(f"{path}-wal").write_text(f"wal {n}")
        names.append((await set_aside(path, now=at)).name)
    assert names == [
        "views.sqlite3.corrupt-20260304T050607Z",
        "views.sqlite3.corrupt-20260304T050607Z.2",
        "views.sqlite3.corrupt-20260304T050607Z.3",
    ]
    assert not path.exists()
    assert not Path(f"{path}-wal").exists()
    for n, name in enumerate(names):
        assert (tmp_path / name).read_text() == f"main {n}"
        assert (tmp_path / f"{name}-wal").read_text() == f"wal {n}"
