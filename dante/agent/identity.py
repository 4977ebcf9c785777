"""Who this machine is on the platform: its provider id, kept in the work directory.

The id (`prv-<12 hex>`) is made once and stored in `<work-dir>/provider.json` with the
account that owns it, so a restarted agent registers the same provider again and finds its
journal, its dispatch consumer and its heartbeat key where it left them. One agent at a time
may use a work directory: a second one would run the same assignments twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Final, TextIO

PROVIDER_FILE: Final = "provider.json"
LOCK_FILE: Final = "agent.lock"


class WorkDirError(Exception):
    """The work directory cannot be used by this agent; the message says why."""


def new_provider_id() -> str:
    return f"prv-{secrets.token_hex(6)}"


def provider_id_for(work_dir: Path, owner: str) -> str:
    """The provider id stored in `work_dir`, made and stored on first use."""
    path = work_dir / PROVIDER_FILE
    if path.exists():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            provider_id, stored_owner = str(stored["provider_id"]), str(stored["owner"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise WorkDirError(
                f"{path} is unreadable ({exc}); move it away to start afresh"
            ) from None
        if stored_owner != owner:
            raise WorkDirError(
                f"the work directory {work_dir} belongs to provider {provider_id} of account "
                f"{stored_owner!r}, not {owner!r}; use another --work-dir for this account"
            )
        return provider_id
    provider_id = new_provider_id()
    _write_atomically(path, json.dumps({"provider_id": provider_id, "owner": owner}) + "\n")
    return provider_id


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_suffix(".tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@contextlib.contextmanager
def locked_work_dir(work_dir: Path) -> Iterator[Path]:
    """Hold the work directory for this agent; refuse if another agent holds it."""
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WorkDirError(f"cannot create the work directory {work_dir}: {exc}") from exc
    handle: TextIO = (work_dir / LOCK_FILE).open("a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WorkDirError(
                f"another agent is running with the work directory {work_dir}; stop it, or "
                "give this one another --work-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield work_dir
    finally:
        handle.close()
