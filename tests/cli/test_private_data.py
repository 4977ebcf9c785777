"""`dante up` keeps its data folder to its user: 0700 folders and 0600 files, all of them,
a folder that existed wider included."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from dante.events.private import private_dir, tighten
from tests.cli.platform_proc import UpProcess
from tests.cli.test_up import ALICE, deposit

pytestmark = pytest.mark.anyio


def modes(root: Path) -> dict[str, int]:
    """Every folder's and file's mode under `root` (itself as '.'), links left out."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        if not path.is_symlink():
            found[str(path.relative_to(root))] = stat.S_IMODE(path.stat().st_mode)
    return found


def wider(root: Path) -> dict[str, str]:
    """What anyone but the owner may read, enter or write."""
    return {name: oct(mode) for name, mode in modes(root).items() if mode & 0o077}


async def test_the_data_folder_and_everything_in_it_are_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "nats").mkdir(parents=True)
    for folder in (data, data / "nats"):
        folder.chmod(0o755)  # made by hand, or by an earlier version
    (data / "notes.txt").write_text("left here\n")
    (data / "notes.txt").chmod(0o644)
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    platform = UpProcess(data, None, env=env).start()
    try:
        created = platform.dante("account", "create", "--role", "renter", **ALICE)
        assert created.returncode == 0, created.stderr
        assert (await deposit(platform.url, 1_000_000)).available_udgpu == 1_000_000
        platform.dante("balance", **ALICE)  # the views have answered from their file
        names = set(modes(data))
        for expected in (
            "secrets.json",
            "nats.env",
            "views.sqlite3",
            "nats/nats-server.log",
            "nats/nats-server.pid",
            "nats/nats-server.lock",
            "nats/jetstream",
        ):
            assert expected in names, sorted(names)
        assert any(name.startswith("views.sqlite3-") for name in names)  # -wal, -shm
        assert wider(data) == {}
    finally:
        assert platform.stop() == 0
    assert wider(data) == {}


def test_tighten_brings_a_wider_tree_to_0700_and_0600(tmp_path: Path) -> None:
    root = tmp_path / "d"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "f").write_text("x")
    (root / "g").write_text("y")
    for path, mode in ((root, 0o755), (root / "a", 0o777), (root / "g", 0o666)):
        path.chmod(mode)
    outside = tmp_path / "outside"
    outside.write_text("z")
    outside.chmod(0o644)
    (root / "link").symlink_to(outside)
    assert tighten(root) >= 4
    assert wider(root) == {}
    assert stat.S_IMODE(outside.stat().st_mode) == 0o644  # a link is not followed
    assert tighten(root) == 0
    assert private_dir(tmp_path / "new" / "dir") == tmp_path / "new" / "dir"
    assert stat.S_IMODE((tmp_path / "new" / "dir").stat().st_mode) == 0o700
