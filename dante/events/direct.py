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
from nats.errors import TimeoutError as NatsTimeout

from dante.events.errors import EventStoreError
from dante.schemas.codec import encode

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg

NO_MESSAGE: Final = "404"
#: How long a read waits for an answer before it asks once more (`RESENDS` times), then
#: the reader's whole timeout: a request lost with a cluster's node that died costs that
#: long, not the timeout (the other replicas answer direct gets meanwhile).
FIRST_WAIT_S: Final = 2.0
RESENDS: Final = 1
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


class _Unanswered(Exception):
    """No answer came in time."""


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
        msg = None
        for wait in (min(FIRST_WAIT_S, self._timeout), self._timeout):
            try:
                msg = await self._nc.request(
                    f"{self._api}.DIRECT.GET.{self.stream}.{subject}", b"", timeout=wait
                )
                break
            except NoRespondersError:
                raise EventStoreError(f"stream {self.stream} does not answer direct gets") from None
            except NatsTimeout:
                continue  # lost, or slow: once more (see `FIRST_WAIT_S`)
        if msg is None:
            raise EventStoreError(f"direct get of the last message of {subject} timed out")
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
        inbox, queue = await self._open()
        seq, remaining = max(1, start), limit
        resent = 0
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
                wait = self._timeout if resent >= RESENDS else min(FIRST_WAIT_S, self._timeout)
                try:
                    while isinstance(item := await self._receive(queue, wait), StoredMessage):
                        yield item
                        seq = item.seq + 1
                        if remaining is not None:
                            remaining -= 1
                except _Unanswered:
                    if resent >= RESENDS:
                        raise EventStoreError(f"direct get of {subject} timed out") from None
                    # Lost with the server it went through (a cluster's node that died), or
                    # slow: ask again from where the batch got to, on a fresh inbox, so that
                    # a late answer to the first is dropped rather than read twice.
                    resent += 1
                    del self._waiters[inbox]
                    inbox, queue = await self._open()
                    continue
                if isinstance(item, str):
                    raise EventStoreError(f"direct get of {subject} failed: {item}")
                if item <= 0:
                    return
        finally:
            self._waiters.pop(inbox, None)

    async def _open(self) -> tuple[str, asyncio.Queue[Msg]]:
        """A fresh reply subject for one read, and the queue its answers arrive in."""
        inbox = await self._inbox()
        queue: asyncio.Queue[Msg] = asyncio.Queue()
        self._waiters[inbox] = queue
        return inbox, queue

    @staticmethod
    async def _receive(queue: asyncio.Queue[Msg], wait: float) -> StoredMessage | int | str:
        """The next message of a batch; at its end, how many matching messages remain; a
        status the server answered with instead (a string); `_Unanswered` after `wait`."""
        try:
            # Most of a batch is already waiting: a timed wait per message would cost more
            # than reading it.
            msg = queue.get_nowait()
        except asyncio.QueueEmpty:
            try:
                msg = await asyncio.wait_for(queue.get(), wait)
            except TimeoutError:
                raise _Unanswered from None
        headers = msg.headers or {}
        status = headers.get("Status")
        if status is None:
            return StoredMessage(int(headers["Nats-Sequence"]), headers, msg.data)
        if status == NO_MESSAGE:
            return 0
        if status == END_OF_BATCH:
            return int(headers.get("Nats-Num-Pending", "0"))
        return str(headers)

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
