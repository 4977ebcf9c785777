"""The platform's data folder is its user's only: folders 0700, files 0600.

It holds the installation's secrets, the event log's store (every balance and ledger),
`views.sqlite3` and its `-wal`/`-shm`, `nats.env`, the logs and pid files: nobody else on
the machine has any business reading them. Three things keep it so:

- `private_dir` makes a folder 0700, and tightens one that exists wider (a data folder made
  by hand, or by an earlier version, 0755);
- `tighten` brings everything already in it to 0700/0600 (views.sqlite3 was 0644 before);
- `private_umask` sets the process's umask to 077, so that what it creates from then on,
  and what its children create (nats-server's store, logs and pid file; SQLite's files,
  whose `-wal`/`-shm` take the database file's mode), is private from the start.

`dante up` and `dante serve` do all three before they start anything.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Final

DIR_MODE: Final = 0o700
FILE_MODE: Final = 0o600
UMASK: Final = 0o077


def private_umask() -> int:
    """Make files and folders this process (and its children) creates private; the umask
    it had."""
    return os.umask(UMASK)


def private_dir(path: Path) -> Path:
    """`path` as a folder only its owner may enter (made, with its parents, if need be)."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) != DIR_MODE:
        path.chmod(DIR_MODE)
    return path


def tighten(root: Path) -> int:
    """Make every folder under `root` (itself included) 0700 and every file 0600, without
    following links; how many it changed. What is not ours to change is left as it is."""
    changed = 0
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        changed += _chmod(here, DIR_MODE)
        for name in files:
            changed += _chmod(here / name, FILE_MODE)
        # Folders are visited in turn as `folder`; a link to one is not followed by walk.
        dirs[:] = [d for d in dirs if not (here / d).is_symlink()]
    return changed


def _chmod(path: Path, mode: int) -> int:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return 0  # gone meanwhile
    if stat.S_ISLNK(info.st_mode) or not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
        return 0
    if stat.S_IMODE(info.st_mode) == mode:
        return 0
    with contextlib.suppress(PermissionError):
        path.chmod(mode)
        return 1
    return 0
