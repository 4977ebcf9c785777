"""The one shape of a decision, whoever makes it: a command's decider or a handler.

A decision is events to append atomically (possibly none), each naming the version of its
aggregate it was decided against; instructions to publish to agents once those events
landed; and how to build the answer from the world afterwards (a command's reply; handlers
answer nobody). `dante.handlers.executor` carries decisions out, the same way for all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dante.events.records import Append

if TYPE_CHECKING:
    from dante.domain.model import World
    from dante.schemas import events as ev

#: Builds the answer from the world once the decision's events are applied to it.
ResultOf = Callable[["World"], Any]


def _no_result(_: World) -> None:
    return None


@dataclass(frozen=True, slots=True)
class Instruction:
    """A message for an agent, published to the dispatch stream with a stable message id."""

    subject: str
    payload: bytes
    msg_id: str


@dataclass(slots=True)
class Decision:
    """Events to append atomically, instructions to publish once they landed, and the answer."""

    appends: list[Append] = field(default_factory=list)
    instructions: list[Instruction] = field(default_factory=list)
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
