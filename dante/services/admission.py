"""Admission: what one account may ask of a command-service instance, and in what order.

A request is admitted or refused from its subject alone (`dante.cmd.<role>.<account>.<verb>`,
which nats-server's permissions tie to the connection), before its body is decoded or any
state is read, so refusing costs almost nothing and a flood never becomes a backlog:

- **Token buckets per account.** Every request takes a token from the account's request
  bucket (`Settings.request_rate` a second, up to `request_burst` at once); a command that
  appends to the log also takes one from its stricter write bucket (`write_rate`,
  `write_burst`). An empty bucket refuses the request `rate_limited`, with the time until
  the next token as its retry-after. A provider account's buckets grow with the machines it
  has registered (`machine_request_rate`, `machine_write_rate` each), as its agents report
  for each of them; machines are capped (`max_machines`). The operator is not limited.
- **Fair queueing across accounts.** Admitted requests wait in their account's own queue,
  bounded (`queue_per_account`; a full queue refuses `rate_limited` too), and the instance's
  `concurrency` slots are handed round-robin over the accounts with something waiting, at
  most `running_per_account` to one account: one account's requests never stand in front of
  another's, whatever their number.

The buckets belong to the instance: with several instances in the queue group, an account
gets up to that many times the rate. They live in memory; an account idle long enough for
its buckets to refill is forgotten.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

from dante.domain.settings import Settings
from dante.schemas.identity import OPERATOR

T = TypeVar("T")

#: The platform's own operator is not limited.
UNLIMITED: Final = OPERATOR
#: A refusal never asks a client to wait less than this (nor to come back at once).
_MIN_RETRY_S: Final = 0.05
#: How many accounts' buckets are kept before idle, full ones are forgotten.
_KEEP_ACCOUNTS: Final = 10_000
#: An account's refusals are logged at most this often (with how many there were).
REPORT_EVERY_S: Final = 10.0


class TokenBucket:
    """`rate` tokens a second, holding at most `burst`; starts full."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(max(burst, 1))
        self.tokens = self.burst
        self.stamp = now

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def wait(self, now: float) -> float:
        """Seconds until a token is there (0: there is one now)."""
        self.refill(now)
        if self.tokens >= 1.0:
            return 0.0
        return (1.0 - self.tokens) / self.rate if self.rate > 0 else 3600.0

    def take(self) -> None:
        self.tokens -= 1.0

    def full(self, now: float) -> bool:
        self.refill(now)
        return self.tokens >= self.burst


@dataclass(slots=True)
class _Account:
    requests: TokenBucket
    writes: TokenBucket
    #: The registered machines the buckets were sized for.
    machines: int = 0


class Admission:
    """The per-account token buckets of one instance."""

    def __init__(
        self,
        settings: Settings,
        *,
        machines: Callable[[str], int] = lambda _: 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._machines = machines
        self._clock = clock
        self._accounts: dict[str, _Account] = {}
        self._refusals: dict[str, int] = {}
        self._reported: dict[str, float] = {}

    def admit(self, account: str, *, writes: bool) -> float | None:
        """None where `account` may send this request now (its tokens taken), else the
        seconds to wait before sending it again."""
        if account == UNLIMITED:
            return None
        now = self._clock()
        state = self._accounts.get(account)
        if state is None:
            state = self._new(account, now)
        machines = self._machines(account)
        if machines != state.machines:
            self._size(state, machines)
        wait = state.requests.wait(now)
        if writes:
            wait = max(wait, state.writes.wait(now))
        if wait > 0:
            return max(wait, _MIN_RETRY_S)
        state.requests.take()
        if writes:
            state.writes.take()
        return None

    def _new(self, account: str, now: float) -> _Account:
        if len(self._accounts) >= _KEEP_ACCOUNTS:
            idle = [
                name
                for name, known in self._accounts.items()
                if known.requests.full(now) and known.writes.full(now)
            ]
            for name in idle:
                del self._accounts[name]
        s = self._settings
        state = _Account(
            requests=TokenBucket(s.request_rate, s.request_burst, now),
            writes=TokenBucket(s.write_rate, s.write_burst, now),
        )
        self._accounts[account] = state
        return state

    def _size(self, state: _Account, machines: int) -> None:
        """A provider's buckets grow with its registered machines (their agents' reports)."""
        s = self._settings
        state.machines = machines
        more = s.machine_request_rate * machines
        state.requests.rate = s.request_rate + more
        state.requests.burst = max(1.0, s.request_burst + more)
        more = s.machine_write_rate * machines
        state.writes.rate = s.write_rate + more
        state.writes.burst = max(1.0, s.write_burst + more)

    def refusal(self, account: str) -> int | None:
        """Count a refusal of `account`; how many since the last report, when one is due."""
        count = self._refusals.get(account, 0) + 1
        now = self._clock()
        last = self._reported.get(account)
        if last is not None and now - last < REPORT_EVERY_S:
            self._refusals[account] = count
            return None
        if len(self._reported) >= _KEEP_ACCOUNTS:
            self._reported.clear()
            self._refusals.clear()
        self._reported[account] = now
        self._refusals[account] = 0
        return count

    def retry_after(self) -> float:
        """What to tell an account whose queue is full: the time for one request to pass."""
        rate = self._settings.request_rate
        return max(1.0 / rate if rate > 0 else 1.0, _MIN_RETRY_S)


class FairQueue(Generic[T]):
    """Per-account FIFO queues served round-robin by at most `concurrency` tasks at once,
    at most `running_per_account` of them for one account."""

    def __init__(
        self,
        run: Callable[[T], Coroutine[Any, Any, None]],
        *,
        concurrency: int = 256,
        queue_per_account: int = 64,
        running_per_account: int = 32,
    ) -> None:
        self._run = run
        self._concurrency = concurrency
        self._queue_limit = queue_per_account
        self._running_limit = running_per_account
        self._queues: dict[str, deque[T]] = {}
        self._running: dict[str, int] = {}
        #: Accounts with something queued and room to run it, in the order they are served.
        self._ready: deque[str] = deque()
        self._scheduled: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._busy = 0

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def offer(self, account: str, item: T) -> bool:
        """Queue `item` for `account`; False where its queue is full (nothing queued)."""
        queue = self._queues.get(account)
        if queue is None:
            queue = self._queues[account] = deque()
        if len(queue) >= self._queue_limit:
            return False
        queue.append(item)
        self._schedule(account)
        self._pump()
        return True

    def _schedule(self, account: str) -> None:
        if account in self._scheduled:
            return
        if self._running.get(account, 0) >= self._running_limit:
            return
        self._scheduled.add(account)
        self._ready.append(account)

    def _pump(self) -> None:
        while self._busy < self._concurrency and self._ready:
            account = self._ready.popleft()
            self._scheduled.discard(account)
            queue = self._queues[account]
            item = queue.popleft()
            if not queue:
                del self._queues[account]
            self._busy += 1
            self._running[account] = self._running.get(account, 0) + 1
            task: asyncio.Task[None] = asyncio.create_task(self._run(item))
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._finished, account=account))
            if account in self._queues:
                self._schedule(account)

    def _finished(self, task: asyncio.Task[None], *, account: str) -> None:
        self._tasks.discard(task)
        self._busy -= 1
        left = self._running[account] - 1
        if left:
            self._running[account] = left
        else:
            del self._running[account]
        if account in self._queues:
            self._schedule(account)
        self._pump()

    async def drain(self, timeout: float) -> None:
        """Wait (up to `timeout`) until everything queued has run."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self._tasks or self._queues:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=left)
            else:
                await asyncio.sleep(0.01)
