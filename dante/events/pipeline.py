"""Appending many independent events fast, safely: `publish_async` with its faults
worked around."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import structlog

from dante.events.records import Append
from dante.events.store import EventStore, headers_of
from dante.schemas.codec import encode

log = structlog.get_logger(__name__)


class Pipeline:
    """Append many independent events fast with nats-py's `publish_async`, safely.

    nats-py 2.16's `publish_async` has two faults: an error reply may never reach the caller
    (its future hangs and keeps its slot), and futures have no acknowledgement timeout. So
    each window of publishes is bounded by a timeout; whatever is still pending then is
    cancelled (freeing its slot) and re-appended one by one through `EventStore.append`,
    with the same message ids, which either lands it, finds it already landed, or raises the
    real error.
    """

    def __init__(self, store: EventStore, *, window: int = 2000, ack_timeout: float = 5.0) -> None:
        self._store = store
        self._js = store._nc.jetstream(publish_async_max_pending=window)  # noqa: SLF001
        self._window = window
        self._ack_timeout = ack_timeout

    async def append_all(self, items: Iterable[Append]) -> list[int]:
        """Append every item; return their sequences in order."""
        seqs: list[int] = []
        chunk: list[Append] = []
        for item in items:
            chunk.append(item)
            if len(chunk) >= self._window:
                seqs.extend(await self._append_window(chunk))
                chunk = []
        if chunk:
            seqs.extend(await self._append_window(chunk))
        return seqs

    async def _append_window(self, chunk: list[Append]) -> list[int]:
        futures: list[asyncio.Future[Any]] = [
            await self._js.publish_async(
                item.subject,
                encode(item.event),
                headers=headers_of(item),
                stream=self._store.stream,
            )
            for item in chunk
        ]
        _, pending = await asyncio.wait(futures, timeout=self._ack_timeout)
        for future in pending:
            future.cancel()
        seqs: list[int] = []
        for item, future in zip(chunk, futures, strict=True):
            if future.done() and not future.cancelled() and future.exception() is None:
                seqs.append(int(future.result().seq))
            else:
                # Hung, timed out or failed: the slow path with the same message id tells.
                seqs.append((await self._store.append(item)).last)
        return seqs
