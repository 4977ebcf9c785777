"""What the log holds and what appending to it gives back: plain values, no NATS."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, NamedTuple, Protocol

from dante.events.subjects import subject_for

if TYPE_CHECKING:
    from dante.schemas.events import Event

#: Headers nats-server (2.12+) keeps on every stored message of an atomic batch; the last
#: one also keeps the commit marker.
BATCH_ID: Final = "Nats-Batch-Id"
BATCH_SEQUENCE: Final = "Nats-Batch-Sequence"
BATCH_COMMIT: Final = "Nats-Batch-Commit"

#: What `read_chunks` yields per message: (sequence, subject, store time, payload).
RawMessage = tuple[int, str, datetime | None, bytes]


class LogMessage(NamedTuple):
    """A message read off the log in order, with its stored headers (`read_messages`)."""

    seq: int
    subject: str
    stored_at: datetime | None
    headers: dict[str, str]
    data: bytes

    @property
    def batch_id(self) -> str | None:
        """The atomic batch it was appended in; None for a single append."""
        return self.headers.get(BATCH_ID)

    @property
    def committed(self) -> bool:
        """Whether the log is at a committed position after this message: a single append,
        or the last message of an atomic batch (positions inside a batch never existed for
        any reader)."""
        return BATCH_ID not in self.headers or BATCH_COMMIT in self.headers


@dataclass(frozen=True, slots=True)
class Append:
    """One event to append, and the version of its aggregate it was decided against.

    `expected`: the aggregate's last stream sequence when read (0: it had no events yet), or
    None to append without a check (only for events whose order cannot matter, like a fee).
    """

    event: Event
    expected: int | None = None
    subject: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "subject", subject_for(self.event))


@dataclass(frozen=True, slots=True)
class Appended:
    """Where appended events landed; `duplicate` when they had landed before (a retry)."""

    seqs: tuple[int, ...]
    duplicate: bool = False

    @property
    def last(self) -> int:
        return self.seqs[-1] if self.seqs else 0


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    # nats-server writes nanoseconds; Python keeps microseconds.
    head, _, tail = value.rstrip("Z").partition(".")
    frac = (tail[:6]).ljust(6, "0") if tail else "000000"
    return datetime.fromisoformat(f"{head}.{frac}").replace(tzinfo=UTC)


class Fold(Protocol):
    """State folded from the log per aggregate (the world): what `EventStore.catch_up` needs."""

    def version_of_aggregate(self, aggregate: str, aggregate_id: str) -> int: ...

    def apply_event(self, event: Event, seq: int) -> bool: ...
