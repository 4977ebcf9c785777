"""Reading `docker logs --timestamps` frames back into timestamped lines."""

from __future__ import annotations

import codecs
import re
from datetime import datetime
from typing import Final

from dante.agent.executors.output import LineSplitter
from dante.agent.executors.spec import utc_now

# RFC 3339 with nanoseconds, as the daemon writes it: 2024-11-14T07:00:14.123456789Z
_TIMESTAMP: Final = re.compile(
    r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2}) "
)


class DockerLogLines:
    """Timestamped lines out of one stream (stdout or stderr) of a container's log.

    Every log message starts with the daemon's timestamp. A line longer than 16 KiB arrives as
    several messages, each with its own timestamp; they are joined back into one line, which
    takes the time of the message that completed it.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._splitter = LineSplitter()
        self._at = utc_now()

    def feed(self, chunk: bytes) -> list[tuple[datetime, str]]:
        lines: list[tuple[datetime, str]] = []
        for message in _messages(self._decoder.decode(chunk)):
            match = _TIMESTAMP.match(message)
            body = message
            if match is not None:
                self._at = _parse(match)
                body = message[match.end() :]
            lines.extend((self._at, line) for line in self._splitter.feed_text(body))
        return lines

    @property
    def last_at(self) -> datetime:
        """The timestamp of the last message read."""
        return self._at

    def finish(self) -> list[tuple[datetime, str]]:
        return [(self._at, line) for line in self._splitter.finish()]


def _messages(text: str) -> list[str]:
    """`text` cut after each \\n, keeping it: each piece is one log message (or its start)."""
    pieces = text.split("\n")
    messages = [piece + "\n" for piece in pieces[:-1]]
    if pieces[-1]:
        messages.append(pieces[-1])
    return messages


def _parse(match: re.Match[str]) -> datetime:
    seconds, fraction, zone = match.groups()
    micros = (fraction or "0")[:6].ljust(6, "0")
    try:
        return datetime.fromisoformat(f"{seconds}.{micros}{'+00:00' if zone == 'Z' else zone}")
    except ValueError:
        return utc_now()
