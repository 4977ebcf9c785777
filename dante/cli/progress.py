"""A progress bar on the terminal for long reads of the log; silent when not on a terminal."""

from __future__ import annotations

import sys
import time
from typing import Final, TextIO

_WIDTH: Final = 30
_EVERY_S: Final = 0.1


class ProgressBar:
    """Call it with (done, total); it redraws at most ten times a second, on stderr, and
    only when stderr is a terminal, so pipes and logs stay clean."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self._label = label
        self._stream = stream or sys.stderr
        self._on = self._stream.isatty()
        self._started = time.perf_counter()
        self._drawn = 0.0
        self._shown = False

    def __call__(self, done: int, total: int) -> None:
        if not self._on:
            return
        now = time.perf_counter()
        if now - self._drawn < _EVERY_S and done < total:
            return
        self._drawn = now
        share = min(1.0, done / total) if total else 1.0
        filled = int(share * _WIDTH)
        rate = done / (now - self._started) if now > self._started else 0.0
        bar = "█" * filled + "░" * (_WIDTH - filled)
        self._stream.write(
            f"\r{self._label} {bar} {share:4.0%}  {done:,}/{total:,} events  {rate:,.0f}/s "
        )
        self._stream.flush()
        self._shown = True

    def close(self) -> None:
        """Clear the bar's line, so the summary starts on a clean one."""
        if self._shown:
            self._stream.write("\r\033[K")
            self._stream.flush()
            self._shown = False
