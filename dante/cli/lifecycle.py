"""Starting and stopping the platform's processes: the data folder, signals, children."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from anyio.abc import Process


def default_data_dir() -> Path:
    """The per-user data folder: $DANTE_DATA_DIR, $XDG_DATA_HOME/dante or ~/.local/share/dante."""
    explicit = os.environ.get("DANTE_DATA_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "dante"


def private_data_dir(data_dir: Path) -> Path:
    """The data folder, made its owner's only before anything is written in it: its
    secrets.json controls the platform, views.sqlite3 holds every balance. A folder that
    exists wider (0755) is tightened with all it holds, and from here on this process and
    its children create files 0600 (`dante.events.private`)."""
    from dante.events.private import private_dir, private_umask, tighten

    private_umask()
    private_dir(data_dir)
    tighten(data_dir)
    return data_dir


async def stop_on_signals(
    scope: anyio.CancelScope, first: list[Callable[[], Awaitable[None]]], who: str = ""
) -> None:
    """On SIGINT or SIGTERM, say so (as `who`, if given), run `first`, then cancel `scope`."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for received in signals:
            said = f"{who}: " if who else ""
            name = signal.Signals(received).name
            print(f"\n{said}stopping ({name}) ...", file=sys.stderr, flush=True)
            for stop in first:
                await stop()
            scope.cancel()
            return


async def stop_child(process: Process, grace_s: float) -> None:
    """Ask a child process to stop (SIGTERM); kill it if it still runs after `grace_s`."""
    import anyio

    if process.returncode is not None:
        return
    process.terminate()
    with anyio.move_on_after(grace_s):
        await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()
