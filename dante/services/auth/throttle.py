"""Slowing down guessers: after each failure, the next check of that login comes later.

A login is counted by account *and* client address (`login_key`): failures from one
address slow down that address's attempts at that account only, so a guesser cannot lock
the account's owner out from elsewhere. (What one address may cost across all names is
`dante.services.auth.gate`'s part; login tokens are not throttled at all.)

A key with n consecutive failures has the next secret checked no sooner than `delay(n)`
after the last failure: 0.1 s after the first, then 0.2 s, 0.4 s … doubling up to `cap`.
An attempt that comes early waits for its turn when that is near (at most `max_wait`);
otherwise it is refused at once, unchecked and uncounted, with the same answer as a wrong
secret. Attempts for one key are taken one at a time, so parallel connections gain a
guesser nothing. A success resets the count; failures are forgotten after `forget_after`
seconds of quiet.

Why not simply wait longer: nats-server pings a new client two seconds after it connects,
and nats-py 2.16 gives up on a connection whose login is still pending then. So a login is
answered within about a second and a half, and longer slow-downs refuse early attempts.

The counts live in the process (bounded, least recently failed forgotten first); with
several platform processes each keeps its own, so a guesser spread over them gains at most
that factor.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Final

_MAX_USERS: Final = 100_000


def login_key(address: str, account: str) -> str:
    """What failures are counted by: the account, from one client address."""
    return f"{account}@{address}"


@dataclass(slots=True)
class _Failures:
    count: int
    last: float


class Attempt:
    """One check of a user's secret; say how it went (an attempt without a verdict, given
    up before its check, does not count)."""

    def __init__(self) -> None:
        self.ok: bool | None = None
        #: False when the attempt must be refused unchecked (too early, or out of time).
        self.allowed = True

    def succeeded(self) -> None:
        self.ok = True

    def failed(self) -> None:
        self.ok = False


class Throttle:
    def __init__(
        self,
        *,
        base: float = 0.1,
        cap: float = 60.0,
        max_wait: float = 1.0,
        forget_after: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base = base
        self._cap = cap
        self._max_wait = max_wait
        self._forget_after = forget_after
        self._clock = clock
        self._failures: OrderedDict[str, _Failures] = OrderedDict()
        #: One lock per user with attempts under way, and how many attempts hold or await it.
        self._turns: dict[str, tuple[asyncio.Lock, int]] = {}

    def failures(self, user: str) -> int:
        entry = self._failures.get(user)
        if entry is None:
            return 0
        if self._clock() - entry.last > self._forget_after:
            del self._failures[user]
            return 0
        return entry.count

    def delay(self, user: str) -> float:
        """How long after `user`'s last failure the next check may come."""
        n = self.failures(user)
        return 0.0 if n == 0 else min(self._cap, self._base * 2 ** (n - 1))

    def wait(self, user: str) -> float:
        """How long from now until `user`'s next check may come."""
        entry = self._failures.get(user)
        if entry is None or self.failures(user) == 0:
            return 0.0
        return max(0.0, entry.last + self.delay(user) - self._clock())

    @contextlib.asynccontextmanager
    async def attempt(self, user: str, *, deadline: float | None = None) -> AsyncIterator[Attempt]:
        """Take `user`'s turn, wait until a check may come, then let the caller check.

        `deadline` is on this throttle's clock: the attempt must be answered by then. An
        attempt yielded with `allowed = False` must be refused without a check.
        """
        lock, users = self._turns.get(user, (asyncio.Lock(), 0))
        self._turns[user] = (lock, users + 1)
        attempt = Attempt()
        try:
            async with lock:
                wait = self.wait(user)
                late = deadline is not None and self._clock() + wait >= deadline
                if wait > self._max_wait or late:
                    attempt.allowed = False
                    yield attempt
                    return
                if wait:
                    await asyncio.sleep(wait)
                yield attempt
                if attempt.ok is not None:
                    self._record(user, ok=attempt.ok)
        finally:
            lock, users = self._turns[user]
            if users == 1:
                del self._turns[user]
            else:
                self._turns[user] = (lock, users - 1)

    def _record(self, user: str, *, ok: bool) -> None:
        count = self.failures(user)
        self._failures.pop(user, None)
        if ok:
            return
        # Re-inserted at the end: the least recently failed users are forgotten first.
        self._failures[user] = _Failures(count=count + 1, last=self._clock())
        while len(self._failures) > _MAX_USERS:
            self._failures.popitem(last=False)
