"""The event store: append with optimistic concurrency and de-duplication, load, replay.

An aggregate's version is the stream sequence of its last event (0: none yet). Every append
names the version it decided against; the server refuses it if the aggregate has moved on,
and we raise `ConcurrencyConflict` so the caller re-reads and decides again.

Several events (possibly of several aggregates) appended together form one JetStream atomic
batch: all land or none. That is how a decision touching three wallets (a charge, the
provider's credit, the platform's fee) keeps money conserved at every committed position.

Each message's `Nats-Msg-Id` is its event id, derived from what caused it, so a retry of the
same decision appends nothing new. After a lost acknowledgement, a retry whose expected
version is now stale gets "wrong last sequence" (10071) rather than `duplicate`: before
calling that a conflict we look for our own message id after the expected version.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, TypeVar

import msgspec
import structlog
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import ConsumerConfig, DeliverPolicy, StreamInfo

from dante.events.codec import Recorded, decode_event
from dante.events.direct import MAX_BATCH, DirectReader, StoredMessage
from dante.events.errors import AppendRejected, AppendTimeout, ConcurrencyConflict, EventStoreError
from dante.events.records import (
    BATCH_COMMIT,
    BATCH_ID,
    BATCH_SEQUENCE,
    Append,
    Appended,
    Fold,
    LogMessage,
    RawMessage,
    parse_time,
)
from dante.events.subjects import DEFAULT_API_PREFIX, EVENT_PREFIX, STREAM, subject_of
from dante.schemas.codec import encode

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg
    from nats.js.client import JetStreamContext


log = structlog.get_logger(__name__)

#: How often an idle ordered consumer hears from the server. nats-py makes a new consumer
#: after two heartbeats missed, which is how a reader comes back after the server restarted
#: (its ordered consumer lived in the old server's memory): nats-py's default of 5 s kept the
#: views and the handlers' world deaf for 10 to 20 s; at 1 s it is 2 to 4 s, for one small
#: message a second per idle reader.
_ORDERED_HEARTBEAT_S: Final = 1.0

#: How long one try of an append waits for its acknowledgement. A healthy JetStream acks in
#: milliseconds; one that does not within 2 s lost the request (its leader died, or the
#: connection it went over): trying again at once is what gets it in, as soon as there is
#: a leader. A retry is always safe (same message ids: a landed one is found, see `append`).
ACK_TIMEOUT_S: Final = 2.0
#: How long an append keeps trying before it gives up: more than a cluster's election of
#: a new stream leader after its leader died (nats-server waits 4 to 9 s for a leader's
#: heartbeats before a follower campaigns, then elects in well under a second), and a
#: second election round should the first split its votes.
APPEND_PATIENCE_S: Final = 20.0
#: Between tries that found no stream leader: 50 ms, doubling to 250 ms, so the append
#: lands within a quarter second of the election.
_UNHEARD_PAUSE_S: Final = 0.05
_UNHEARD_PAUSE_MAX_S: Final = 0.25

WRONG_LAST_SEQUENCE: Final = 10071
BATCH_DUPLICATE: Final = 10201
_json: Final = msgspec.json.Decoder(dict[str, Any])

_Item = TypeVar("_Item", bound=tuple[Any, ...])


def headers_of(item: Append) -> dict[str, str]:
    headers = {"Nats-Msg-Id": item.event.event_id}
    if item.expected is not None:
        headers["Nats-Expected-Last-Subject-Sequence"] = str(item.expected)
    return headers


class EventStore:
    """Appends to and reads from the `DANTE` stream over one NATS connection."""

    def __init__(
        self,
        nc: NATS,
        *,
        stream: str = STREAM,
        timeout: float = 5.0,
        ack_timeout: float = ACK_TIMEOUT_S,
        patience: float = APPEND_PATIENCE_S,
        api_prefix: str = DEFAULT_API_PREFIX,
    ) -> None:
        """`api_prefix`: `CLIENT_API_PREFIX` for a reader outside the `DANTE` account (the
        operator), which may read with direct gets only: `read` then polls with them.
        `timeout`: of reads; `ack_timeout`: how long one try of an append waits for its
        acknowledgement; `patience`: how long an append keeps trying (see `append`)."""
        self._nc = nc
        self._api = api_prefix
        self._js = nc.jetstream(timeout=timeout, prefix=api_prefix)
        self.stream = stream
        self._timeout = timeout
        self._ack_timeout = ack_timeout
        self._patience = patience
        self._direct = DirectReader(nc, stream, timeout=timeout, api_prefix=api_prefix)
        #: Called with the seconds each append took (acknowledged, duplicate or refused)
        #: and how many events it carried: the platform's metrics set it.
        self.observe_append: Callable[[float, int], None] | None = None

    @property
    def jetstream(self) -> JetStreamContext:
        """The JetStream context the store reads and appends with."""
        return self._js

    @property
    def nc(self) -> NATS:
        """The connection it reads and appends over (for a caller's commands on it)."""
        return self._nc

    # ── appending ───────────────────────────────────────────────────────────────────────

    async def append(self, *items: Append) -> Appended:
        """Append one event, or several atomically; return their stream sequences.

        A try that gets no acknowledgement in `ack_timeout`, or finds nobody to take it
        (`no responders`: the stream has no leader while a cluster elects one), is made
        again, with the same message ids, until `patience` runs out: a lost acknowledgement
        is found as a duplicate, so nothing lands twice.

        Raises `ConcurrencyConflict` when an expected version is stale, `AppendTimeout` when
        no acknowledgement came in time, `EventStoreError` when no stream took it in time
        (no leader, or no log set up), `AppendRejected` for anything else.
        """
        if not items:
            return Appended(seqs=())
        observe = self.observe_append
        if observe is None:
            return await self._append(items)
        began = time.perf_counter()
        try:
            return await self._append(items)
        finally:
            observe(time.perf_counter() - began, len(items))

    async def _append(self, items: Sequence[Append]) -> Appended:
        payloads = [encode(item.event) for item in items]
        last_error: Exception | None = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._patience
        attempt = 0
        unheard = 0
        while True:
            try:
                reply = await self._send(items, payloads)
            except (NatsTimeout, TimeoutError) as exc:
                last_error = exc
                log.warning("append.ack_timeout", attempt=attempt, first=items[0].event.event_id)
            except NoRespondersError as exc:
                last_error = exc
                unheard += 1
                if loop.time() >= deadline:
                    raise EventStoreError(
                        f"no JetStream stream answers on {items[0].subject} (for "
                        f"{self._patience:g}s): is the log set up, does the cluster have a "
                        "quorum?"
                    ) from None
                pause = min(_UNHEARD_PAUSE_S * 2 ** min(unheard - 1, 8), _UNHEARD_PAUSE_MAX_S)
                await asyncio.sleep(min(pause, max(deadline - loop.time(), 0.0)))
                continue
            else:
                return await self._settle(items, reply)
            attempt += 1
            if loop.time() >= deadline:
                break
        raise AppendTimeout(
            f"no acknowledgement for {items[0].event.event_id} after {attempt} tries"
        ) from last_error

    async def _send(self, items: Sequence[Append], payloads: list[bytes]) -> dict[str, Any]:
        if len(items) == 1:
            msg = await self._nc.request(
                items[0].subject,
                payloads[0],
                timeout=self._ack_timeout,
                headers=headers_of(items[0]),
            )
            return _json.decode(msg.data)
        # An atomic batch: every message but the last is staged, the last commits.
        batch_id = self._nc._nuid.next().decode()  # noqa: SLF001 (nats-py's unique id source)
        last = len(items)
        for index, (item, payload) in enumerate(zip(items, payloads, strict=True), start=1):
            headers = headers_of(item)
            headers[BATCH_ID] = batch_id
            headers[BATCH_SEQUENCE] = str(index)
            if index < last:
                await self._nc.publish(item.subject, payload, headers=headers)
            else:
                headers[BATCH_COMMIT] = "1"
                msg = await self._nc.request(
                    item.subject, payload, timeout=self._ack_timeout, headers=headers
                )
                return _json.decode(msg.data)
        raise AssertionError("unreachable")

    async def _settle(self, items: Sequence[Append], reply: dict[str, Any]) -> Appended:
        error = reply.get("error")
        if error is None:
            last_seq = int(reply["seq"])
            count = int(reply.get("count", 1))
            seqs = tuple(range(last_seq - count + 1, last_seq + 1))
            return Appended(seqs=seqs, duplicate=bool(reply.get("duplicate")))
        err_code = int(error.get("err_code", 0))
        description = str(error.get("description", ""))
        if err_code in (WRONG_LAST_SEQUENCE, BATCH_DUPLICATE):
            landed = await self._find_landed(items)
            if landed is not None:
                return Appended(seqs=landed, duplicate=True)
            if err_code == WRONG_LAST_SEQUENCE:
                raise await self._conflict(items)
        raise AppendRejected(int(error.get("code", 0)), err_code, description)

    async def _find_landed(self, items: Sequence[Append]) -> tuple[int, ...] | None:
        """If our first message already sits in the log (a lost ack), where the batch landed."""
        first = items[0]
        want = first.event.event_id
        if first.expected is not None:
            async for seq, headers, _ in self._direct_batch(first.subject, first.expected + 1):
                if headers.get("Nats-Msg-Id") == want:
                    return tuple(range(seq, seq + len(items)))
            return None
        last = await self._last_message(first.subject)
        if last is not None and last[1].get("Nats-Msg-Id") == want:
            return tuple(range(last[0], last[0] + len(items)))
        return None

    async def _conflict(self, items: Sequence[Append]) -> ConcurrencyConflict:
        for item in items:
            if item.expected is None:
                continue
            actual = await self.version(item.subject)
            if actual != item.expected:
                return ConcurrencyConflict(item.subject, item.expected, actual)
        first = next(i for i in items if i.expected is not None)
        assert first.expected is not None
        return ConcurrencyConflict(first.subject, first.expected, None)

    # ── reading one aggregate ───────────────────────────────────────────────────────────

    async def catch_up(self, fold: Fold, subject: str) -> int:
        """Apply to `fold` what the log has for one aggregate beyond its version; return how
        many events it applied (after a conflict: the aggregate moved on elsewhere)."""
        _, _, aggregate, aggregate_id = subject.split(".", 3)
        current = fold.version_of_aggregate(aggregate, aggregate_id)
        applied = 0
        for recorded in await self.load(aggregate, aggregate_id, after=current):
            applied += fold.apply_event(recorded.event, recorded.seq)
        return applied

    async def version(self, subject: str) -> int:
        """The stream sequence of the last event on `subject`, 0 when it has none."""
        last = await self._last_message(subject)
        return 0 if last is None else last[0]

    async def load(self, aggregate: str, aggregate_id: str, *, after: int = 0) -> list[Recorded]:
        """Every event of one aggregate after sequence `after`, in log order."""
        subject = subject_of(aggregate, aggregate_id)
        return [
            Recorded(
                seq=seq,
                subject=subject,
                stored_at=parse_time(headers.get("Nats-Time-Stamp")),
                event=decode_event(data),
            )
            async for seq, headers, data in self._direct_batch(subject, after + 1)
        ]

    async def scan(self, subjects: str, start: int = 1) -> AsyncIterator[Recorded]:
        """Every event on `subjects` (wildcards allowed) from `start` to the current end.

        Batched direct gets: quick for a filtered catch-up, and it ends by itself, where an
        ordered consumer on a filter cannot tell that no more matching events exist.
        """
        async for seq, headers, data in self._direct_batch(subjects, start):
            yield Recorded(
                seq=seq,
                subject=headers.get("Nats-Subject", subjects),
                stored_at=parse_time(headers.get("Nats-Time-Stamp")),
                event=decode_event(data),
            )

    def scan_raw(
        self, subjects: str, start: int = 1, *, limit: int | None = None
    ) -> AsyncIterator[StoredMessage]:
        """Like `scan`, undecoded: (sequence, stored headers, payload), at most `limit`."""
        return self._direct.messages(subjects, start, limit=limit)

    async def _last_message(self, subject: str) -> StoredMessage | None:
        return await self._direct.last(subject)

    def _direct_batch(self, subject: str, start: int) -> AsyncIterator[StoredMessage]:
        """Stored messages of `subject` from sequence `start` on, with their headers."""
        return self._direct.messages(subject, start)

    # ── reading the whole log ───────────────────────────────────────────────────────────

    async def last_seq(self) -> int:
        info = await self._js.stream_info(self.stream)
        return int(info.state.last_seq)

    async def stream_info(self) -> StreamInfo:
        """The stream's state (first and last sequence) and when it was made."""
        return await self._js.stream_info(self.stream)

    async def read(
        self,
        start: int = 1,
        *,
        stop: int | None = None,
        follow: bool = False,
        subjects: str = f"{EVENT_PREFIX}.>",
    ) -> AsyncIterator[Recorded]:
        """Events from sequence `start` on, in order, decoded.

        Reads up to `stop` (default: the last sequence when called) unless `follow`, in which
        case it goes on with new events as they are appended.
        """
        async for seq, subject, stored_at, data in self.read_raw(
            start, stop=stop, follow=follow, subjects=subjects
        ):
            yield Recorded(seq=seq, subject=subject, stored_at=stored_at, event=decode_event(data))

    async def read_raw(
        self,
        start: int = 1,
        *,
        stop: int | None = None,
        follow: bool = False,
        subjects: str = f"{EVENT_PREFIX}.>",
    ) -> AsyncIterator[tuple[int, str, datetime | None, bytes]]:
        """Like `read`, without decoding: (sequence, subject, store time, payload).

        Uses an ordered consumer, the fastest way nats-py offers to stream a log in order;
        outside the `DANTE` account, where no consumer may be created, batched direct gets.
        """
        if not follow and stop is None:
            stop = await self.last_seq()
        if stop is not None and stop < start:
            return
        if self._api != DEFAULT_API_PREFIX:
            async for item in self._poll(start, stop=stop, subjects=subjects):
                yield item
            return
        sub = await self._js.subscribe(
            subjects,
            stream=self.stream,
            ordered_consumer=True,
            idle_heartbeat=_ORDERED_HEARTBEAT_S,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            config=ConsumerConfig(opt_start_seq=max(1, start)),
            pending_msgs_limit=200_000,
            pending_bytes_limit=256 * 1024 * 1024,
        )
        try:
            async for msg in sub.messages:
                meta = msg.metadata
                seq = meta.sequence.stream
                yield seq, msg.subject, meta.timestamp, msg.data
                if stop is not None and seq >= stop:
                    return
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def read_chunks(
        self,
        start: int = 1,
        *,
        stop: int | None = None,
        follow: bool = False,
        subjects: str = f"{EVENT_PREFIX}.>",
        max_waiting: int = 10_000,
    ) -> AsyncIterator[list[RawMessage]]:
        """Like `read_raw`, in lists: every message that arrived since the last list.

        An ordered consumer with a callback collects the messages. nats-py's message iterator
        costs a task and a wait per message; the callback does not, so this reads about twice
        as fast, and a reader that handles many events at once (a projection catching up)
        gets them many at a time. At most `max_waiting` messages wait for the reader: the
        subscription pauses until it takes them. Outside the `DANTE` account (the operator),
        where no consumer may be made, the lists are batches of direct gets.
        """

        def raw(msg: Msg) -> RawMessage:
            meta = msg.metadata
            return (meta.sequence.stream, msg.subject, meta.timestamp, msg.data)

        def raw_stored(found: StoredMessage) -> RawMessage:
            headers = found.headers
            subject = headers.get("Nats-Subject", subjects)
            return (found.seq, subject, parse_time(headers.get("Nats-Time-Stamp")), found.data)

        async for chunk in self._chunks(
            start,
            stop,
            follow=follow,
            subjects=subjects,
            max_waiting=max_waiting,
            convert=raw,
            convert_stored=raw_stored,
        ):
            yield chunk

    async def read_messages(
        self,
        start: int = 1,
        *,
        stop: int | None = None,
        follow: bool = False,
        subjects: str = f"{EVENT_PREFIX}.>",
        max_waiting: int = 10_000,
    ) -> AsyncIterator[list[LogMessage]]:
        """Like `read_chunks`, with each message's stored headers (atomic batch membership,
        message id): what an auditor needs to tell committed positions from the inside of a
        batch."""

        def stored(msg: Msg) -> LogMessage:
            meta = msg.metadata
            return LogMessage(
                meta.sequence.stream, msg.subject, meta.timestamp, msg.headers or {}, msg.data
            )

        def from_direct(found: StoredMessage) -> LogMessage:
            headers = found.headers
            subject = headers.get("Nats-Subject", subjects)
            at = parse_time(headers.get("Nats-Time-Stamp"))
            return LogMessage(found.seq, subject, at, headers, found.data)

        async for chunk in self._chunks(
            start,
            stop,
            follow=follow,
            subjects=subjects,
            max_waiting=max_waiting,
            convert=stored,
            convert_stored=from_direct,
        ):
            yield chunk

    async def _chunks(
        self,
        start: int,
        stop: int | None,
        *,
        follow: bool,
        subjects: str,
        max_waiting: int,
        convert: Callable[[Msg], _Item],
        convert_stored: Callable[[StoredMessage], _Item],
    ) -> AsyncIterator[list[_Item]]:
        """The reader behind `read_chunks` and `read_messages`; an item's first field is its
        stream sequence."""
        if not follow and stop is None:
            stop = await self.last_seq()
        if not follow and subjects != f"{EVENT_PREFIX}.>":
            # A consumer on a filter cannot tell that nothing more will match: stop at the
            # last message that does.
            stop = min(stop or 0, await self.version(subjects))
        if stop is not None and stop < start:
            return
        chunks = (
            self._polled_chunks(start, stop, subjects, convert_stored)
            if self._api != DEFAULT_API_PREFIX
            else self._consumed_chunks(start, stop, subjects, max_waiting, convert)
        )
        async for chunk in chunks:
            yield chunk

    async def _consumed_chunks(
        self,
        start: int,
        stop: int | None,
        subjects: str,
        max_waiting: int,
        convert: Callable[[Msg], _Item],
    ) -> AsyncIterator[list[_Item]]:
        """Chunks of an ordered consumer's deliveries, collected by a callback."""
        arrived: list[_Item] = []
        ready = asyncio.Event()
        room = asyncio.Event()
        room.set()

        async def collect(msg: Msg) -> None:
            arrived.append(convert(msg))
            ready.set()
            if len(arrived) >= max_waiting:
                room.clear()
                await room.wait()

        sub = await self._js.subscribe(
            subjects,
            stream=self.stream,
            ordered_consumer=True,
            idle_heartbeat=_ORDERED_HEARTBEAT_S,
            cb=collect,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            config=ConsumerConfig(opt_start_seq=max(1, start)),
            pending_msgs_limit=200_000,
            pending_bytes_limit=256 * 1024 * 1024,
        )
        try:
            while True:
                await ready.wait()
                ready.clear()
                chunk = arrived.copy()
                arrived.clear()
                room.set()
                if stop is not None and chunk and chunk[-1][0] >= stop:
                    yield [item for item in chunk if item[0] <= stop]
                    return
                if chunk:
                    yield chunk
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _polled_chunks(
        self,
        start: int,
        stop: int | None,
        subjects: str,
        convert: Callable[[StoredMessage], _Item],
        interval: float = 0.5,
    ) -> AsyncIterator[list[_Item]]:
        """Chunks of batched direct gets (a thousand messages each), polling at the end when
        following."""
        seq = max(1, start)
        chunk: list[_Item] = []
        while True:
            limit = None if stop is None else stop - seq + 1
            async for found in self._direct.messages(subjects, seq, limit=limit):
                chunk.append(convert(found))
                seq = found.seq + 1
                if len(chunk) >= MAX_BATCH:
                    yield chunk
                    chunk = []
            if chunk:
                yield chunk
                chunk = []
            if stop is not None:
                return  # up to `stop`, or as far as messages match the subjects
            await asyncio.sleep(interval)

    async def _poll(
        self, start: int, *, stop: int | None, subjects: str, interval: float = 0.5
    ) -> AsyncIterator[tuple[int, str, datetime | None, bytes]]:
        seq = max(1, start)
        while True:
            async for found, headers, data in self._direct_batch(subjects, seq):
                subject = headers.get("Nats-Subject", subjects)
                yield found, subject, parse_time(headers.get("Nats-Time-Stamp")), data
                seq = found + 1
                if stop is not None and found >= stop:
                    return
            if stop is not None:
                return
            await asyncio.sleep(interval)
