"""`dante up` with a damaged views file: it gets ready all the same, with the views rebuilt.

A real `dante up` in two processes: the views are folded in its `dante serve handlers views`
child, and read by the command service in `dante up` itself, through the file.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest

from dante.client.commands import Client
from dante.client.connect import connect
from dante.client.credentials import Credential
from dante.schemas.commands import Command, GetBalance
from dante.schemas.views import Balance
from tests.cli.platform_proc import UpProcess
from tests.funding import fund

pytestmark = pytest.mark.anyio

ALICE = {"DANTE_USERNAME": "alice", "DANTE_PASSWORD": "alice-secret-1"}
SET_ASIDE = "projections.damaged_file_set_aside"
T = TypeVar("T")


async def as_alice(url: str, command: Command[Any], result: type[T]) -> T:
    credential = Credential(username="alice", secret=ALICE["DANTE_PASSWORD"], role="renter")
    nc = await connect(url, name="test", credential=credential)
    try:
        return await Client(nc, "renter", "alice").send(command, result)
    finally:
        await nc.close()


async def deposit(url: str, amount: int) -> None:
    credential = Credential(username="alice", secret=ALICE["DANTE_PASSWORD"], role="renter")
    nc = await connect(url, name="test", credential=credential)
    try:
        await fund(Client(nc, "renter", "alice"), amount)
    finally:
        await nc.close()


async def balance(url: str) -> Balance:
    """Alice's balance, from the views (the child's file, read by `dante up`)."""
    return await as_alice(url, GetBalance(), Balance)


def status(platform: UpProcess) -> dict[str, Any]:
    result = platform.dante("status", "--json")
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    assert report["ok"] is True
    return report


def spoil_the_ledger_under_its_writer(path: Path) -> None:
    """Garbage over the ledger's root page in the file, checkpointed first (see
    tests/projections/test_damaged_views.py)."""
    db = sqlite3.connect(path, timeout=10)
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


def set_aside_lines(platform: UpProcess) -> list[dict[str, Any]]:
    lines = "".join(platform.output).splitlines()
    return [json.loads(line) for line in lines if SET_ASIDE in line]


async def test_up_with_a_damaged_views_file_gets_ready_and_its_readers_follow_the_new_one(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    views = data / "views.sqlite3"
    first = UpProcess(data, None, "--processes", "2").start()
    try:
        assert first.dante("account", "create", "--role", "renter", **ALICE).returncode == 0
        await deposit(first.url, 5_000_000)
        assert (await balance(first.url)).deposited_udgpu == 5_000_000
    finally:
        assert first.stop() == 0
    assert not Path(f"{views}-wal").exists()  # stopped cleanly: all of it is in the file
    with views.open("r+b") as file:
        file.write(b"\xde\xad\xbe\xef" * 25)

    platform = UpProcess(data, first.port, "--processes", "2").start(timeout=30)
    try:
        report = status(platform)
        last = report["stream"]["last_seq"]
        assert (await balance(platform.url)).deposited_udgpu == 5_000_000
        with anyio.fail_after(10):
            while report["summary"]["position"] < last:
                report = status(platform)
        assert report["summary"]["wallets"] >= 1
        [at_start] = set_aside_lines(platform)
        assert at_start["found"] == "at start"

        # Damaged again while both processes have the new file open: the child runs into it
        # with the next write, sets it aside and folds the views again; `dante up` reads on.
        spoil_the_ledger_under_its_writer(views)
        await deposit(platform.url, 1_000_000)
        assert (await balance(platform.url)).deposited_udgpu == 6_000_000
        assert status(platform)["summary"]["wallets"] >= 1
    finally:
        assert platform.stop() == 0
    found = set_aside_lines(platform)
    assert [line["found"] for line in found] == ["at start", "while following the log"]
    assert all(line["db"] == str(views) for line in found)
    moved = [Path(line["moved_to"]) for line in found]
    assert all(
        path.parent == data and path.name.startswith("views.sqlite3.corrupt-") for path in moved
    )
    assert moved[0].read_bytes()[:16] == b"\xde\xad\xbe\xef" * 4  # kept as it was found
    assert moved[1].exists()
