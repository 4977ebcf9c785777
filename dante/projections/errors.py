"""Errors of the read models: one base class, a specific subclass for each way they fail."""

from __future__ import annotations


class ProjectionError(Exception):
    """Something went wrong building or reading a read model."""


class UnknownEvent(ProjectionError, TypeError):
    """An event type a projection does not know: a new event needs a decision in every fold."""

    def __init__(self, projection: str, event_type: str) -> None:
        super().__init__(f"the {projection} projection cannot apply an unknown event {event_type}")
        self.projection = projection
        self.event_type = event_type


class CorruptViews(ProjectionError):
    """The views' SQLite file is damaged: SQLite cannot read it, or its integrity check fails.

    The runner sets such a file aside and folds the views again from the log."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"the views' file {path} is damaged: {reason}")
        self.path = path
        self.reason = reason
