"""Reading stored messages of any stream by subject with direct gets, without a consumer.

The event store loads aggregates this way; the command service reads job output, upload
chunks and object-store chunks this way. A batched direct get (`next_by_subj`, up to a
thousand messages a request) answers from any replica, ends by itself at the last matching
message, and costs the server no consumer state.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Final, NamedTuple

from nats.errors import NoRespondersError

from dante.events.errors import EventStoreError
from dante.schemas.codec import encode

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg

NO_MESSAGE: Final = "404"
END_OF_BATCH: Final = "204"
MAX_BATCH: Final = 1000


class StoredMessage(NamedTuple):
    """A message as the stream holds it: its sequence, headers (with `Nats-…` metadata)
    and payload. Batched reads add `Nats-Num-Pending`: how many matching messages follow."""

    seq: int
    headers: dict[str, str]
    data: bytes

    @property
    def pending(self) -> int:
        return int(self.headers.get("Nats-Num-Pending", "0"))


class DirectReader:
    """Direct gets on one stream over one connection (one inbox subscription, shared)."""

    def __init__(
        self, nc: NATS, stream: str, *, timeout: float = 5.0, api_prefix: str = "$JS.API"
    ) -> None:
        """`api_prefix`: where this connection reaches the JetStream API (a client outside
        the `DANTE` account uses `CLIENT_API_PREFIX`)."""
        self._nc = nc
        self._api = api_prefix
        self.stream = stream
        self._timeout = timeout
        self._inbox_prefix: str | None = None
        self._inbox_lock = asyncio.Lock()
        self._waiters: dict[str, asyncio.Queue[Msg]] = {}
        self._next_token = 0

    async def last(self, subject: str) -> StoredMessage | None:
        """The last message stored on `subject`, or None when there is none."""
        try:
            msg = await self._nc.request(
                f"{self._api}.DIRECT.GET.{self.stream}.{subject}", b"", timeout=self._timeout
            )
        except NoRespondersError:
            raise EventStoreError(f"stream {self.stream} does not answer direct gets") from None
        headers = msg.headers or {}
        if headers.get("Status") == NO_MESSAGE:
            return None
        if "Status" in headers:
            raise EventStoreError(f"direct get of {subject} failed: {headers}")
        return StoredMessage(int(headers["Nats-Sequence"]), headers, msg.data)

    async def messages(
        self,
        subject: str,
        start: int = 1,
        *,
        limit: int | None = None,
        batch_bytes: int | None = None,
    ) -> AsyncGenerator[StoredMessage, None]:
        """Stored messages of `subject` (wildcards allowed) from sequence `start` on, in
        order, up to `limit` of them (default: all up to the current end).

        `batch_bytes` caps what one request fetches ahead (the server stops a batch after the
        message that reaches it): set it when messages are large, so a reader that stops
        early or goes slowly does not have hundreds of megabytes pushed at it.
        """
        inbox = await self._inbox()
        queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._waiters[inbox] = queue
        seq, remaining = max(1, start), limit
        try:
            while remaining is None or remaining > 0:
                batch = MAX_BATCH if remaining is None else min(MAX_BATCH, remaining)
                fields = {"seq": seq, "next_by_subj": subject, "batch": batch}
                if batch_bytes is not None:
                    fields["max_bytes"] = batch_bytes
                request = encode(fields)
                await self._nc.publish(
                    f"{self._api}.DIRECT.GET.{self.stream}", request, reply=inbox
                )
                while isinstance(item := await self._receive(queue, subject), StoredMessage):
                    yield item
                    seq = item.seq + 1
                    if remaining is not None:
                        remaining -= 1
                if item <= 0:
                    return
        finally:
            del self._waiters[inbox]

    async def _receive(self, queue: asyncio.Queue[Msg], subject: str) -> StoredMessage | int:
        """The next message of a batch; at its end, how many matching messages remain."""
        try:
            # Most of a batch is already waiting: a timed wait per message would cost more
            # than reading it.
            msg = queue.get_nowait()
        except asyncio.QueueEmpty:
            try:
                msg = await asyncio.wait_for(queue.get(), self._timeout)
            except TimeoutError:
                raise EventStoreError(f"direct get of {subject} timed out") from None
        headers = msg.headers or {}
        status = headers.get("Status")
        if status is None:
            return StoredMessage(int(headers["Nats-Sequence"]), headers, msg.data)
        if status == NO_MESSAGE:
            return 0
        if status == END_OF_BATCH:
            return int(headers.get("Nats-Num-Pending", "0"))
        raise EventStoreError(f"direct get of {subject} failed: {headers}")

    async def _inbox(self) -> str:
        async with self._inbox_lock:
            if self._inbox_prefix is None:
                prefix = self._nc.new_inbox()

                async def route(msg: Msg) -> None:
                    queue = self._waiters.get(msg.subject)
                    if queue is not None:
                        queue.put_nowait(msg)

                await self._nc.subscribe(f"{prefix}.*", cb=route)
                self._inbox_prefix = prefix
            self._next_token += 1
            return f"{self._inbox_prefix}.{self._next_token}"
