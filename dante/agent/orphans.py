"""Finding and killing job processes a crashed agent left behind.

A script job runs as its own process group (its pid is the group id), which the journal
records. After a crash the group may still run, or its id may have been reused by something
else; so a group is killed only if its leader still is the job: its environment names the
job's own `DANTE_OUTPUT_DIR`. The same mark finds processes that left the group (`setsid`)
but stayed in the job's folder tree. Linux reads /proc; where there is none, the journaled
group is signalled without that check.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import structlog

log = structlog.get_logger(__name__)

_PROC: Final = Path("/proc")
_MARK: Final = b"DANTE_OUTPUT_DIR="


def _output_dir(pid: int) -> Path | None:
    """The DANTE_OUTPUT_DIR in a process's environment, if we may read it and it has one."""
    try:
        environ = (_PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return None
    for entry in environ.split(b"\0"):
        if entry.startswith(_MARK):
            return Path(os.fsdecode(entry[len(_MARK) :]))
    return None


def _pids() -> Iterator[int]:
    with contextlib.suppress(OSError):
        for entry in _PROC.iterdir():
            if entry.name.isdigit():
                yield int(entry.name)


def _kill_group(pgid: int) -> bool:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _kill(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def kill_job_group(pgid: int, work_dir: Path) -> bool:
    """Kill the journaled process group of a job whose folder is `work_dir`, if it is still
    that job's; True if something was killed."""
    if pgid <= 1:
        return False
    if _PROC.is_dir():
        found = _output_dir(pgid)
        if found is None or not _inside(found, work_dir):
            return False
    return _kill_group(pgid)


def kill_strays(jobs_dir: Path) -> list[int]:
    """Kill every process of ours whose job folder is under `jobs_dir`: call only when no job
    of this agent runs. Returns the pids killed."""
    if not _PROC.is_dir():
        return []
    me = os.getpid()
    killed: list[int] = []
    for pid in _pids():
        if pid == me:
            continue
        found = _output_dir(pid)
        if found is not None and _inside(found, jobs_dir) and _kill(pid):
            killed.append(pid)
    if killed:
        log.warning("killed processes left by a previous run", pids=killed)
    return killed


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True
