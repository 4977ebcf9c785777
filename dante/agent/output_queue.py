"""A job attempt's output lines waiting to be sent, in bounded memory.

The executor hands over lines as the job prints them and must never wait on the platform:
a job blocked on a full pipe would be paid for doing nothing. So lines queue here, up to a
byte budget; past it the oldest are dropped and the job's log later says how many.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from dante.agent.executors.spec import OutputLine, utc_now

DEFAULT_MAX_BYTES: Final = 4 * 1024 * 1024
BATCH_LINES: Final = 1000
BATCH_BYTES: Final = 256 * 1024


def _size(line: OutputLine) -> int:
    return len(line.text) + 64


class OutputQueue:
    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        #: (number, line): numbers let `sent` forget exactly what was sent, even if old
        #: lines were dropped meanwhile.
        self._lines: deque[tuple[int, OutputLine]] = deque()
        self._added = 0
        self._bytes = 0
        self._max = max_bytes
        #: Lines dropped since the last batch taken.
        self.lost = 0
        self.total_lost = 0

    def __len__(self) -> int:
        return len(self._lines)

    def add(self, lines: Sequence[OutputLine]) -> None:
        for line in lines:
            self._added += 1
            self._lines.append((self._added, line))
            self._bytes += _size(line)
        while self._bytes > self._max and self._lines:
            self._bytes -= _size(self._lines.popleft()[1])
            self.lost += 1
            self.total_lost += 1

    def batch(self) -> Batch:
        """The next lines to send (not removed until `sent`), led by a note of any lost."""
        batch: list[OutputLine] = []
        last = 0
        note = self.lost
        if self.lost:
            batch.append(
                OutputLine(
                    at=utc_now(),
                    stream="stderr",
                    text=f"[dante agent] {self.lost} lines of output were lost: the platform "
                    "was unreachable and they did not fit the agent's buffer",
                )
            )
        size = 0
        for number, line in self._lines:
            if len(batch) >= BATCH_LINES or (batch and size + _size(line) > BATCH_BYTES):
                break
            batch.append(line)
            size += _size(line)
            last = number
        return Batch(lines=batch, last=last, note=note)

    def sent(self, batch: Batch) -> None:
        """The batch from `batch()` is stored (or given up): forget it."""
        self.lost -= batch.note
        while self._lines and self._lines[0][0] <= batch.last:
            self._bytes -= _size(self._lines.popleft()[1])


@dataclass(frozen=True, slots=True)
class Batch:
    lines: list[OutputLine]
    #: The number of the last queued line in it (0: none).
    last: int
    #: It starts with a note that this many lines were lost (0: no note).
    note: int
