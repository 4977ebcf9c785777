"""What one client address may cost the login checks, whatever names it tries.

nats-server tells the callout which address a connection comes from (`client_info.host`),
so the expensive part of a login, the password's scrypt, is shared out by address:

- **Pending logins**: at most `pending_per_address` password logins from one address are
  under way at once; more are refused at once, unchecked. Eighty parallel logins with random
  names from one address cost the platform sixteen queued checks, not eighty.
- **Failure budget**: each address has a bucket of `failures_per_address` failed password
  checks, refilled at `failures_per_minute`. A check takes one from it before the scrypt and
  gives it back when the password was right; with none left, the address's password logins
  are refused unchecked. A guesser spraying names from one address is held to that rate, and
  costs the platform no more scrypts than that.
- **Hashing in turn**: the scrypts run `hashing` at a time (they take ~128 MiB and a few
  tenths of a second each), at most `hashing_per_address` (1) of them for one address, and
  a free slot goes to the waiting address that holds fewest, not to whoever queued most: a
  flood from one address takes one core at most and delays another address's login by
  about one hash at most.

- **Sign-ups**: each address has a bucket of `signups_per_address` sign-up connections,
  refilled at `signups_per_hour`; with none left, its sign-up connections are refused (one
  such connection opens one account at most: `dante.services.auth.service`).

Login tokens are never gated: a token is 256 random bits checked with one SHA-256, so
guessing one is hopeless and checking one costs nothing; an agent or a CLI with its token
gets in whatever anyone else does from any address. The platform's own processes do not go
through the callout at all.

An IPv6 address counts by its /64, the block one host is usually given. Addresses are
remembered in the process, bounded (the least recently seen forgotten first).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Final

from dante.services.auth.limits import LoginLimits

_MAX_ADDRESSES: Final = 100_000
#: Where nats-server names no address (it always does for TCP clients).
UNKNOWN: Final = "unknown"


def client_key(host: str) -> str:
    """The address that logins are counted by: the IPv4 address, an IPv6 address's /64."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host or UNKNOWN
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class Buckets:
    """Token buckets by key, on `clock`: each holds up to `capacity` tokens and refills at
    `per_second` (both given at each call, so the limits may change while it runs). Full
    buckets are not remembered; at most `_MAX_ADDRESSES`, the least recently used forgotten
    first."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._held: OrderedDict[str, _Bucket] = OrderedDict()

    def left(self, key: str, capacity: float, per_second: float) -> float:
        bucket = self._held.get(key)
        if bucket is None:
            return capacity
        return min(capacity, bucket.tokens + (self._clock() - bucket.at) * per_second)

    def take(self, key: str, capacity: float, per_second: float) -> bool:
        """Take one token from `key`'s bucket; False (taking nothing) when it has none."""
        left = self.left(key, capacity, per_second)
        if left < 1.0:
            return False
        self._set(key, left - 1.0, capacity)
        return True

    def give(self, key: str, capacity: float, per_second: float) -> None:
        """Give one token back to `key`'s bucket."""
        self._set(key, self.left(key, capacity, per_second) + 1.0, capacity)

    def _set(self, key: str, tokens: float, capacity: float) -> None:
        self._held.pop(key, None)
        if tokens >= capacity:
            return  # full: nothing to remember
        self._held[key] = _Bucket(tokens=tokens, at=self._clock())
        while len(self._held) > _MAX_ADDRESSES:
            self._held.popitem(last=False)


class FairSlots:
    """`capacity` slots, at most `per_key` of them held by one key at a time. A free slot
    goes to the waiting key that holds the fewest (ties: in turn, round robin), each key's
    waiters first come first served: a key that asks while another holds the slots is
    served next, and no key can take them all."""

    def __init__(self, capacity: int, *, per_key: int | None = None) -> None:
        self._free = capacity
        self._per_key = per_key or capacity
        self._held: dict[str, int] = {}
        self._waiting: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()

    @property
    def waiting(self) -> int:
        return sum(len(queue) for queue in self._waiting.values())

    def held(self, key: str) -> int:
        return self._held.get(key, 0)

    @contextlib.asynccontextmanager
    async def take(self, key: str, *, within: float | None = None) -> AsyncIterator[bool]:
        """Hold a slot (yields True), or yield False when none came `within` seconds."""
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, deque()).append(turn)
        self._dispatch()
        granted = turn.done()
        if not granted:
            try:
                await asyncio.wait_for(asyncio.shield(turn), within)
                granted = True
            except TimeoutError:
                pass
            finally:
                if not granted:
                    if turn.done() and not turn.cancelled():
                        self._release(key)  # granted just as it gave up: pass the slot on
                    else:
                        turn.cancel()
                        self._forget(key, turn)
        if not granted:
            yield False
            return
        try:
            yield True
        finally:
            self._release(key)

    def _forget(self, key: str, turn: asyncio.Future[None]) -> None:
        queue = self._waiting.get(key)
        if queue is None:
            return
        with contextlib.suppress(ValueError):
            queue.remove(turn)
        if not queue:
            del self._waiting[key]

    def _release(self, key: str) -> None:
        left = self._held.get(key, 0) - 1
        if left > 0:
            self._held[key] = left
        else:
            self._held.pop(key, None)
        self._free += 1
        self._dispatch()

    def _dispatch(self) -> None:
        """Give free slots to waiters: the eligible key holding fewest first."""
        while self._free > 0:
            eligible = [k for k in self._waiting if self._held.get(k, 0) < self._per_key]
            if not eligible:
                return
            chosen = min(eligible, key=lambda k: self._held.get(k, 0))
            queue = self._waiting[chosen]
            turn = queue.popleft()
            if queue:
                self._waiting.move_to_end(chosen)  # its next waiter after everybody else's
            else:
                del self._waiting[chosen]
            if turn.done():
                continue  # given up
            self._free -= 1
            self._held[chosen] = self._held.get(chosen, 0) + 1
            turn.set_result(None)


class AddressGate:
    """The per-address limits of `LoginLimits` (see the module's note)."""

    def __init__(
        self, limits: LoginLimits | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits or LoginLimits()
        self._clock = clock
        self._pending: dict[str, int] = {}
        self._failures = Buckets(clock)
        self._signups = Buckets(clock)
        self.hashing = FairSlots(self.limits.hashing_slots, per_key=self.limits.hashing_per_address)

    def pending(self, address: str) -> int:
        return self._pending.get(address, 0)

    @contextlib.contextmanager
    def admit(self, address: str) -> Iterator[bool]:
        """Count a password login from `address` as under way; yields False (and counts
        nothing) when that address has as many under way as it may."""
        under_way = self._pending.get(address, 0)
        if under_way >= self.limits.pending_per_address:
            yield False
            return
        self._pending[address] = under_way + 1
        try:
            yield True
        finally:
            left = self._pending[address] - 1
            if left:
                self._pending[address] = left
            else:
                del self._pending[address]

    def _failure_rate(self) -> tuple[float, float]:
        return float(self.limits.failures_per_address), self.limits.failures_per_minute / 60.0

    def budget(self, address: str) -> float:
        """The failed checks `address` may still make now."""
        return self._failures.left(address, *self._failure_rate())

    def reserve(self, address: str) -> bool:
        """Take one failure from `address`'s budget before a check; False when none is left
        (refuse without checking)."""
        return self._failures.take(address, *self._failure_rate())

    def refund(self, address: str) -> None:
        """The check succeeded (or did not happen): give its reservation back."""
        self._failures.give(address, *self._failure_rate())

    def admit_signup(self, address: str) -> bool:
        """Count a sign-up connection from `address`; False (counting nothing) when that
        address has opened as many as it may for now."""
        limits = self.limits
        return self._signups.take(
            address, float(limits.signups_per_address), limits.signups_per_hour / 3600.0
        )
