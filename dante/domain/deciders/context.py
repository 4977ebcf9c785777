"""What every decider gets besides the world and the command, and what it returns."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from dante.domain.settings import Settings
from dante.events.records import Append
from dante.schemas import events as ev

if TYPE_CHECKING:
    from dante.domain.model import World

#: Builds the answer from the world once the decision's events are applied to it.
ResultOf = Callable[["World"], Any]


@dataclass(frozen=True, slots=True)
class Context:
    """Who is acting, when, and under which rules."""

    role: str
    identity: str
    command_id: str
    now: datetime
    settings: Settings = field(default_factory=Settings)

    @property
    def cause(self) -> str:
        return f"cmd:{self.role}:{self.identity}:{self.command_id}"

    def event_id(self, n: int = 0) -> str:
        """The id (and message id) of the command's n-th event: retries reproduce it."""
        return f"{self.cause}:{n}"

    def derived_id(self, prefix: str) -> str:
        """A stable id for something the command creates (a job, a withdrawal)."""
        digest = hashlib.sha256(self.cause.encode()).hexdigest()[:16]
        return f"{prefix}-{digest}"

    def envelope(self, n: int = 0) -> dict[str, Any]:
        return {"event_id": self.event_id(n), "at": self.now, "cause": self.cause}


def _no_result(_: World) -> None:
    return None


@dataclass(slots=True)
class Decision:
    """Events to append atomically (possibly none) and how to build the answer afterwards."""

    appends: list[Append]
    result: ResultOf = _no_result

    @classmethod
    def on(cls, version: int, *events: ev.Event, result: ResultOf = _no_result) -> Decision:
        """Append `events` to one aggregate read at `version` (checked on the first)."""
        appends = [
            Append(event=event, expected=version if i == 0 else None)
            for i, event in enumerate(events)
        ]
        return cls(appends=appends, result=result)

    @classmethod
    def nothing(cls, result: ResultOf = _no_result) -> Decision:
        """Nothing to append (an idempotent repeat); still answer with `result`."""
        return cls(appends=[], result=result)
