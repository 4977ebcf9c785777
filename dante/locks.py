"""A file lock held by this process until released, with the holder's pid written in it.

For what two processes must never run on at once (a nats-server's store, a local chain's
ledger). flock: released by the kernel when the process dies, however it dies. Windows has
no flock: there `hold` takes nothing and returns None.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


class LockHeld(Exception):
    """Another process holds the lock; `holder` is the pid it wrote ("?" if none)."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is held by process {holder}")
        self.path = path
        self.holder = holder


def hold(path: Path) -> int | None:
    """Take the lock at `path` (made if missing, private); its file descriptor, to `release`.
    Raises `LockHeld` at once when another process has it."""
    if sys.platform == "win32":
        return None
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise LockHeld(path, holder) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def release(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)
