"""Talking to the platform from the agent: which failures are worth retrying, and backoff.

Three outcomes of a command: it is done; the platform refused it for good (`CommandError`
with a code that will not change, such as `wrong_state`); or the platform could not be
reached or was busy (`Unreachable`), in which case the same command is sent again later.
Every command the agent sends is safe to send again (same command id, or deduplicated by
the platform: tick numbers, attempt state).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import nats.errors

from dante.client.commands import CommandError, PlatformUnavailable

T = TypeVar("T")

#: Refusals that say "not now" rather than "no".
TRANSIENT_CODES: Final = frozenset({"conflict", "unavailable", "internal"})


class Unreachable(Exception):
    """The platform did not answer (or was busy); try again later."""


def is_transient(error: CommandError) -> bool:
    return error.code in TRANSIENT_CODES


async def attempt_call(call: Callable[[], Awaitable[T]]) -> T:
    """Run `call`; raise `Unreachable` for failures worth retrying, `CommandError` for
    refusals that are final."""
    try:
        return await call()
    except CommandError as error:
        if is_transient(error):
            raise Unreachable(f"{error.code}: {error}") from error
        raise
    except PlatformUnavailable as exc:
        raise Unreachable(str(exc)) from exc
    except (nats.errors.Error, TimeoutError, OSError) as exc:
        raise Unreachable(f"{type(exc).__name__}: {exc}") from exc


class Backoff:
    """Exponential delays with jitter: 0.5 s, 1 s, 2 s ... up to `ceiling`."""

    def __init__(self, first: float = 0.5, ceiling: float = 15.0) -> None:
        self._first = first
        self._ceiling = ceiling
        self._next = first
        self.failures = 0

    def reset(self) -> None:
        self._next = self._first
        self.failures = 0

    def delay(self) -> float:
        self.failures += 1
        delay = self._next
        self._next = min(self._next * 2, self._ceiling)
        return delay * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not a secret
