"""Errors of the event log: one base class, a specific subclass for each way an append fails."""

from __future__ import annotations


class EventStoreError(Exception):
    """Something went wrong talking to the log."""


class ConcurrencyConflict(EventStoreError):
    """The aggregate moved on since it was read: re-read it and decide again."""

    def __init__(self, subject: str, expected: int, actual: int | None) -> None:
        super().__init__(
            f"{subject} was expected at sequence {expected} but is at "
            f"{'an unknown sequence' if actual is None else actual}"
        )
        self.subject = subject
        self.expected = expected
        self.actual = actual


class AppendTimeout(EventStoreError):
    """No acknowledgement arrived after every retry; the append may or may not have landed.

    Retrying with the same events is always safe: their message ids make a second landing a
    duplicate.
    """


class AppendRejected(EventStoreError):
    """The server refused the append for a reason other than a conflict."""

    def __init__(self, code: int, err_code: int, description: str) -> None:
        super().__init__(f"append rejected ({err_code}): {description}")
        self.code = code
        self.err_code = err_code
        self.description = description
