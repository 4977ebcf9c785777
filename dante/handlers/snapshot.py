"""Snapshots of the handlers' world in the data folder, so a start reads a snapshot and the
log after it rather than the whole log.

A snapshot is a cache. `Snapshots.load` uses one only if it was written by this code (the
format and a fingerprint of the code that folds the log) from this log (the stream, when it
was made, and the id of the event at the snapshot's position, read back from the log); a
missing one, or one that is damaged, stale or another log's, is ignored with one log line,
and the world is folded from the whole log as before.

`Snapshots.maybe_save` takes one when the world has moved on by `every_events` (20,000) and
`min_interval_s` (10 s) has passed since the last (and so right after a start that folded a long
log); `Snapshots.close` takes a last one at a clean stop. Taking one copies the world's
dictionaries on the event loop (milliseconds: the states are immutable); the encoding and
writing happen in a worker thread, a few thousand items at a time, so the loop goes on. The
file is written beside its final name, flushed to disk and renamed over it (0600: it holds
every account's balance), so a crash leaves the previous snapshot or the new one, whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import importlib
import math
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final, TypeVar

import structlog

from dante.domain.model import ProviderState, World
from dante.domain.model.snapshot import FORMAT, Capture, Header, Reader, SnapshotError
from dante.events.subjects import EVENT_PREFIX

if TYPE_CHECKING:
    from collections.abc import Callable

    from dante.events.store import EventStore

log = structlog.get_logger(__name__)

FILE_NAME: Final = "world.snapshot"
_T = TypeVar("_T")

#: The code that decides what the world holds after each event: a change to any of it makes
#: older snapshots stale (they could hold a world this code would not have folded).
FOLD_MODULES: Final = (
    "dante.domain.model.world",
    "dante.domain.model.job",
    "dante.domain.model.provider",
    "dante.domain.model.wallet",
    "dante.domain.model.snapshot",
    "dante.schemas.events",
    "dante.schemas.values",
    "dante.schemas.codec",
    "dante.events.codec",
    "dante.events.upcasting",
)


@functools.cache
def fingerprint() -> str:
    """A digest of the snapshot format and of the source of `FOLD_MODULES`."""
    digest = hashlib.sha256(f"format {FORMAT}\n".encode())
    for name in FOLD_MODULES:
        module = importlib.import_module(name)
        digest.update(name.encode() + b"\n")
        if module.__file__ is not None:
            digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:32]


class Snapshots:
    """The world's snapshot file: loading it at start, saving it now and then and at stop."""

    def __init__(
        self,
        path: Path,
        store: EventStore,
        *,
        every_events: int = 20_000,
        min_interval_s: float = 10.0,
    ) -> None:
        self.path = path
        self._store = store
        self._every = every_events
        self._interval = min_interval_s
        #: The position of the last snapshot saved or loaded (0: none).
        self.saved_seq = 0
        self._saved_at = -math.inf
        self._task: asyncio.Task[None] | None = None
        #: The header of the snapshot the last `load` used (None: it used none).
        self.loaded: Header | None = None

    # ── loading ─────────────────────────────────────────────────────────────────────────

    async def load(self) -> World | None:
        """The world of the snapshot, if there is one this code may use for this log."""
        self.loaded = None
        started = time.perf_counter()
        found = await self._read(lambda reader: reader.world())
        if found is None:
            return None
        header, world = found
        self.loaded = header
        self.saved_seq = header.seq
        self._saved_at = time.monotonic()
        log.info(
            "world.snapshot_loaded",
            path=str(self.path),
            position=header.seq,
            taken_at=header.taken_at.isoformat(),
            providers=header.providers,
            jobs=header.jobs,
            seconds=round(time.perf_counter() - started, 3),
        )
        return world

    async def load_providers(self) -> tuple[int, list[ProviderState]] | None:
        """Only the providers of the snapshot, and its position (the command service's
        market), if there is one this code may use for this log; the rest is not read."""
        self.loaded = None
        found = await self._read(
            lambda reader: reader.providers(), then="reading every provider event"
        )
        if found is None:
            return None
        header, providers = found
        self.loaded = header
        log.info(
            "world.snapshot_providers_loaded",
            path=str(self.path),
            position=header.seq,
            providers=len(providers),
        )
        return header.seq, providers

    async def _read(
        self, take: Callable[[Reader], _T], *, then: str = "folding the whole log"
    ) -> tuple[Header, _T] | None:
        """The header and what `take` reads of the snapshot, once its header was checked
        against the log; None (said in one log line) when there is none to use."""
        try:
            file = await asyncio.to_thread(self.path.open, "rb")
        except FileNotFoundError:
            log.info("world.no_snapshot", path=str(self.path), then=then)
            return None
        except OSError as exc:
            self._ignored(f"cannot be opened: {exc}", then)
            return None
        try:
            try:
                reader = await asyncio.to_thread(Reader, file.read)
            except (SnapshotError, OSError) as exc:
                self._ignored(str(exc), then)
                return None
            refusal = await self._refusal(reader.header)
            if refusal is not None:
                self._ignored(refusal, then)
                return None
            try:
                taken = await asyncio.to_thread(take, reader)
            except (SnapshotError, OSError) as exc:
                self._ignored(str(exc), then)
                return None
        finally:
            file.close()
        return reader.header, taken

    def _ignored(self, reason: str, then: str) -> None:
        log.warning("world.snapshot_ignored", path=str(self.path), reason=reason, then=then)

    async def _refusal(self, header: Header) -> str | None:
        """Why the snapshot may not be used for this log, or None."""
        if header.format != FORMAT or header.fingerprint != fingerprint():
            return (
                f"written by other code (format {header.format}, fingerprint "
                f"{header.fingerprint}; this code's: {FORMAT}, {fingerprint()})"
            )
        if header.stream != self._store.stream:
            return f"of stream {header.stream}, not {self._store.stream}"
        created, last = await self._stream_facts()
        if header.stream_created and created and header.stream_created != created:
            return (
                f"of another log: its stream was made at {header.stream_created}, "
                f"this one at {created}"
            )
        if header.seq > last:
            return f"beyond the end of the log (position {header.seq}, the log ends at {last})"
        found = await self._event_id_at(header.seq)
        if found != header.event_id:
            return (
                f"of another log: its event at {header.seq} was {header.event_id!r}, "
                f"the log's is {found!r}"
            )
        return None

    async def _stream_facts(self) -> tuple[str, int]:
        info = await self._store.stream_info()
        created = info.created.isoformat() if info.created is not None else ""
        return created, int(info.state.last_seq)

    async def _event_id_at(self, seq: int) -> str | None:
        """The message id of the event stored at `seq`; None when there is none there."""
        async for found in self._store.scan_raw(f"{EVENT_PREFIX}.>", seq, limit=1):
            return found.headers.get("Nats-Msg-Id", "") if found.seq == seq else None
        return None

    # ── saving ──────────────────────────────────────────────────────────────────────────

    def due(self, world: World) -> bool:
        """Whether a snapshot should be taken now (none is being written)."""
        return (
            self._task is None
            and world.position - self.saved_seq >= self._every
            and time.monotonic() - self._saved_at >= self._interval
        )

    def maybe_save(self, world: World) -> None:
        """Start writing a snapshot in the background if one is due."""
        if self.due(world):
            self._task = asyncio.get_running_loop().create_task(self._background(world))

    async def _background(self, world: World) -> None:
        try:
            await self.save(world)
        except Exception:
            # A cache: a failed write (a full disk) costs a longer start, nothing more.
            log.exception("world.snapshot_failed", path=str(self.path))
            self._saved_at = time.monotonic()
        finally:
            self._task = None

    async def save(self, world: World) -> bool:
        """Write a snapshot of the world as it is now; False when it has nothing new."""
        if world.position <= self.saved_seq:
            return False
        started = time.perf_counter()
        capture = Capture(world)
        copied = time.perf_counter() - started
        created, _ = await self._stream_facts()
        event_id = await self._event_id_at(capture.position)
        if event_id is None:
            raise SnapshotError(f"the log has no event at {capture.position}")
        header = capture.header(
            fingerprint=fingerprint(),
            stream=self._store.stream,
            stream_created=created,
            event_id=event_id,
            at=datetime.now(UTC),
        )
        size = await asyncio.to_thread(write, self.path, capture, header)
        self.saved_seq = capture.position
        self._saved_at = time.monotonic()
        log.info(
            "world.snapshot_saved",
            path=str(self.path),
            position=capture.position,
            bytes=size,
            copy_ms=round(copied * 1000, 1),
            seconds=round(time.perf_counter() - started, 3),
        )
        return True

    async def close(self, world: World) -> None:
        """At a clean stop: wait for a snapshot being written, then take a last one."""
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
        try:
            await self.save(world)
        except Exception:
            log.exception("world.snapshot_failed", path=str(self.path))


def write(path: Path, capture: Capture, header: Header) -> int:
    """Write the snapshot beside `path`, flush it to disk and rename it over `path`; return
    its size in bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    size = 0
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        out: IO[bytes]
        with os.fdopen(fd, "wb") as out:
            for frame in capture.frames(header):
                out.write(frame)
                size += len(frame)
            out.flush()
            os.fsync(out.fileno())
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    return size
