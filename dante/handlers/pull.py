"""Pulling a durable consumer's messages as they arrive, a batch's worth at a time.

nats-py 2.16's `fetch(n)` waits, once a first message came, until `n` have come or its
timeout passed: under a light load that holds every trigger back for up to the timeout, and
fetching fewer at a time costs a pull request (and its status reply) for every few
messages, which at a trickle costs more than handling them. A `Puller` keeps one pull
request for up to `batch` messages open and hands over whatever has arrived as soon as
something has, asking again once the request is used up or expired. This is how the newer
clients' `consume` works; nats-py 2.16 has no call for it, so it uses the subscription's
inbox the way `fetch` does.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Final

from nats.errors import TimeoutError as NatsTimeout

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription
    from nats.js.client import JetStreamContext

#: Statuses that end a pull request: no messages, request timed out, conflict (e.g. the
#: consumer changed, or too many waiting requests).
_ENDS_REQUEST: Final = frozenset({"404", "408", "409"})


class Puller:
    """Messages of a pull subscription as they arrive (see the module's docstring)."""

    def __init__(
        self, sub: JetStreamContext.PullSubscription, batch: int, expires: float = 1.0
    ) -> None:
        inner: Subscription | None = sub._sub  # noqa: SLF001 (nats-py 2.16, as `fetch` uses it)
        assert inner is not None
        self._sub = sub
        self._inner = inner
        self._batch = batch
        self._expires = expires
        #: Messages the open request may still deliver, and when it expires (loop time).
        self._left = 0
        self._until = 0.0
        #: The description of a 409 that ended the last request (consumer deleted, ...).
        self._conflict: str | None = None

    async def _request(self) -> None:
        request = {"batch": self._batch, "expires": int(self._expires * 1_000_000_000)}
        await self._sub._nc.publish(  # noqa: SLF001
            self._sub._nms,  # noqa: SLF001
            json.dumps(request).encode(),
            self._sub._deliver,  # noqa: SLF001
        )
        self._left = self._batch
        self._until = asyncio.get_running_loop().time() + self._expires

    def _take(self, msg: Msg, into: list[Msg]) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if status is None:
            into.append(msg)
            self._left -= 1
        elif status in _ENDS_REQUEST:
            self._left = 0
            if status == "409":
                self._conflict = (msg.headers or {}).get("Description", "conflict")

    async def next(self) -> list[Msg]:
        """At least one message: what has arrived. Raises `TimeoutError` when a request
        expired with nothing delivered (the caller loops)."""
        loop = asyncio.get_running_loop()
        if self._left <= 0 or loop.time() >= self._until:
            await self._request()
        msgs: list[Msg] = []
        try:
            # A little past the expiry, so the server's own 408 usually comes first.
            msg = await self._inner.next_msg(timeout=self._until - loop.time() + 0.25)
        except (NatsTimeout, TimeoutError):
            self._left = 0
            raise TimeoutError from None
        self._take(msg, msgs)
        queue = self._inner._pending_queue  # noqa: SLF001
        while len(msgs) < self._batch and not queue.empty():
            msg = queue.get_nowait()
            self._inner._pending_size -= len(msg.data)  # noqa: SLF001
            self._take(msg, msgs)
        if not msgs:
            await self._after_conflict()
            raise TimeoutError
        return msgs

    async def _after_conflict(self) -> None:
        """A 409 ended the request: a deleted consumer is the caller's to make again (it
        fails, and is restarted); anything else (leadership change, too many waiting
        requests) passes, so wait a moment rather than asking again at once."""
        conflict, self._conflict = self._conflict, None
        if conflict is None:
            return
        if "deleted" in conflict.lower():
            raise ConsumerGone(conflict)
        await asyncio.sleep(0.5)


class ConsumerGone(Exception):
    """The durable consumer was deleted under the puller."""
