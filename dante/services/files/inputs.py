"""The renters' stored inputs: what each account holds (its quota) and which may expire.

Every input stored in `dante_files` gets an entry in the KV bucket `dante_inputs`, keyed
`<renter>.<digest of the object's name>`, with the object's name, size and when it was
stored. The upload of an input sums its renter's entries (one filtered read of the bucket)
and is refused `quota_exceeded` when the new file would take the account past
`Settings.input_quota_bytes`.

`InputSweeper` runs with the handlers (which follow every job): once an hour, it deletes the
inputs stored longer ago than `Settings.input_ttl_s` that no job still waiting or running
names, and their entries; an input given to a job is kept while the job may need it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

import msgspec
import structlog

from dante.events.subjects import FILES_BUCKET, INPUTS_BUCKET

if TYPE_CHECKING:
    from nats.js.client import JetStreamContext
    from nats.js.kv import KeyValue

    from dante.domain.model import World

log = structlog.get_logger(__name__)

SWEEP_EVERY_S: Final = 3600.0


class StoredInput(msgspec.Struct, frozen=True, kw_only=True):
    object: str
    size: int
    stored_at: datetime


def input_key(renter: str, name: str) -> str:
    return f"{renter}.{hashlib.sha256(name.encode()).hexdigest()[:32]}"


class InputLedger:
    """The `dante_inputs` bucket: what inputs each renter has stored."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js
        self._kv: KeyValue | None = None

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            self._kv = await self._js.key_value(INPUTS_BUCKET)
        return self._kv

    async def entries(self, subjects: str = ">") -> list[tuple[str, StoredInput]]:
        kv = await self._bucket()
        watcher = await kv.watch(subjects, ignore_deletes=True)
        found: list[tuple[str, StoredInput]] = []
        try:
            async for entry in watcher:
                if entry is None:
                    break
                if entry.value:
                    found.append((entry.key, msgspec.json.decode(entry.value, type=StoredInput)))
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        return found

    async def used(self, renter: str, *, besides: str | None = None) -> int:
        """Bytes `renter`'s stored inputs take (but `besides`, one being replaced)."""
        return sum(
            stored.size
            for _, stored in await self.entries(f"{renter}.>")
            if stored.object != besides
        )

    async def record(self, renter: str, name: str, size: int, at: datetime) -> None:
        kv = await self._bucket()
        stored = StoredInput(object=name, size=size, stored_at=at)
        await kv.put(input_key(renter, name), msgspec.json.encode(stored))

    async def forget(self, key: str) -> None:
        kv = await self._bucket()
        await kv.purge(key)


class InputSweeper:
    """Deletes inputs no live job names once they are older than `ttl_s`."""

    def __init__(
        self,
        js: JetStreamContext,
        world: Callable[[], World],
        ttl_s: int,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._js = js
        self._ledger = InputLedger(js)
        self._world = world
        self._ttl = timedelta(seconds=ttl_s)
        self._clock = clock

    async def run(self, every_s: float = SWEEP_EVERY_S) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                log.exception("inputs.sweep_failed")
            await asyncio.sleep(every_s)

    async def sweep(self) -> list[str]:
        """Delete the expired, unreferenced inputs now; their names."""
        needed = {
            ref.object for job in self._world().jobs.values() if not job.ended for ref in job.inputs
        }
        cutoff = self._clock() - self._ttl
        files = await self._js.object_store(FILES_BUCKET)
        deleted = []
        for key, stored in await self._ledger.entries():
            if stored.stored_at > cutoff or stored.object in needed:
                continue
            try:
                await files.delete(stored.object)
            except Exception as exc:  # gone already: forget it all the same
                log.info("inputs.delete_failed", object=stored.object, error=str(exc))
            await self._ledger.forget(key)
            deleted.append(stored.object)
        if deleted:
            log.info("inputs.expired", count=len(deleted))
        return deleted
