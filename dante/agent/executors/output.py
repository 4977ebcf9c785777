"""Turning a job's raw output into timestamped lines, delivered in batches while it runs."""

from __future__ import annotations

import codecs
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Final

import anyio
import structlog

from dante.agent.executors.spec import OutputLine, OutputSink, Stream, utc_now

log = structlog.get_logger(__name__)

#: Longer lines are cut into pieces of this many characters, so one line never floods a batch.
MAX_LINE_CHARS: Final = 16_384
BATCH_LINES: Final = 100
BATCH_DELAY_S: Final = 0.2
_LINE_BREAK: Final = re.compile(r"\r\n|\r|\n")


class LineSplitter:
    """Splits a stream of bytes or text into lines at \\n, \\r\\n or a lone \\r.

    A lone \\r ends a line too, so progress bars (which redraw with \\r) show up as they
    advance instead of as one endless line. Invalid UTF-8 becomes U+FFFD.
    """

    def __init__(self, max_chars: int = MAX_LINE_CHARS) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial: list[str] = []
        self._partial_len = 0
        self._after_cr = False
        self._max = max_chars

    def feed(self, data: bytes) -> list[str]:
        return self.feed_text(self._decoder.decode(data))

    def feed_text(self, text: str) -> list[str]:
        if not text:
            return []
        if self._after_cr and text.startswith("\n"):
            text = text[1:]  # the \n of a \r\n split across two reads
        self._after_cr = False
        lines: list[str] = []
        position = 0
        for line_break in _LINE_BREAK.finditer(text):
            self._append(text[position : line_break.start()], lines)
            lines.append(self._take())
            position = line_break.end()
        if position < len(text):
            self._append(text[position:], lines)
        else:
            self._after_cr = text.endswith("\r")
        return lines

    def finish(self) -> list[str]:
        """The last line, if the output did not end with a line break."""
        lines: list[str] = []
        self._append(self._decoder.decode(b"", final=True), lines)
        if self._partial:
            lines.append(self._take())
        return lines

    def _append(self, text: str, lines: list[str]) -> None:
        while text:
            room = self._max - self._partial_len
            self._partial.append(text[:room])
            self._partial_len += len(text[:room])
            text = text[room:]
            if self._partial_len >= self._max:
                lines.append(self._take())

    def _take(self) -> str:
        line = "".join(self._partial)
        self._partial.clear()
        self._partial_len = 0
        return line


class OutputBatcher:
    """Collects lines and hands them to the sink in order, in batches."""

    def __init__(self, sink: OutputSink, *, max_lines: int = BATCH_LINES) -> None:
        self._sink = sink
        self._max_lines = max_lines
        self._pending: list[OutputLine] = []
        self._lock = anyio.Lock()
        self.delivered = 0
        self.dropped = 0

    async def add(self, stream: Stream, text: str, at: datetime | None = None) -> None:
        self._pending.append(OutputLine(at=at or utc_now(), stream=stream, text=text))
        if len(self._pending) >= self._max_lines:
            # Waiting here is the back-pressure: a slow sink slows reading, not memory.
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            while self._pending:
                batch = self._pending[: self._max_lines]
                del self._pending[: self._max_lines]
                await self._deliver(batch)

    async def _deliver(self, batch: Sequence[OutputLine]) -> None:
        try:
            await self._sink(batch)
        except Exception as exc:
            # Losing log lines must not kill a job that is being paid for: say so and go on.
            self.dropped += len(batch)
            log.warning("job output lost", lines=len(batch), error=repr(exc))
        else:
            self.delivered += len(batch)


@asynccontextmanager
async def batched_output(
    sink: OutputSink, *, max_lines: int = BATCH_LINES, max_delay_s: float = BATCH_DELAY_S
) -> AsyncIterator[OutputBatcher]:
    """An `OutputBatcher` that also flushes every `max_delay_s`, and once more at the end."""
    batcher = OutputBatcher(sink, max_lines=max_lines)

    async def tick() -> None:
        while True:
            await anyio.sleep(max_delay_s)
            await batcher.flush()

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(tick)
            try:
                yield batcher
            finally:
                group.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await batcher.flush()
