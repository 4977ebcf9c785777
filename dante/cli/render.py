"""How commands show things: one JSON document, aligned tables, amounts, times, progress."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import msgspec

from dante.schemas.money import format_dgpu


def emit(document: Any) -> None:
    """Print one JSON document (Structs and datetimes encoded as msgspec does)."""
    print(msgspec.json.format(msgspec.json.encode(document), indent=2).decode(), flush=True)


def to_builtins(value: Any) -> Any:
    return msgspec.to_builtins(value)


def table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], *, right: Iterable[int] = ()
) -> str:
    """Columns padded to their widest cell; `right` names the columns aligned right."""
    lines = [list(headers), *([str(cell) for cell in row] for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    right_set = set(right)
    out = []
    for line in lines:
        cells = [
            cell.rjust(width) if i in right_set else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def pairs(items: Iterable[tuple[str, str]]) -> str:
    """`label  value` lines with the values aligned."""
    listed = list(items)
    width = max((len(label) for label, _ in listed), default=0)
    return "\n".join(f"{label:<{width}}  {value}".rstrip() for label, value in listed)


def dgpu(udgpu: int) -> str:
    """An amount for people: dGPU, exactly, with at least two decimals."""
    return format_dgpu(udgpu, places=2)


def rate(udgpu: int) -> str:
    return f"{dgpu(udgpu)} dGPU/GPU-h"


def when(at: datetime | None) -> str:
    """A moment in local time, to the second; '-' when it has not happened."""
    if at is None:
        return "-"
    return at.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def ago(at: datetime | None, now: datetime | None = None) -> str:
    if at is None:
        return "-"
    return duration(((now or datetime.now(UTC)) - at).total_seconds()) + " ago"


def duration(seconds: float) -> str:
    """1h 02m, 3m 05s, 12s."""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover (the loop always returns)


class Progress:
    """One status line on stderr, redrawn in place, shown only when stderr is a terminal."""

    def __init__(self, stream: TextIO | None = None, *, every: float = 0.1) -> None:
        self._stream = stream or sys.stderr
        self.enabled = self._stream.isatty()
        self._every = every
        self._last = 0.0
        self._width = 0

    def show(self, text: str, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self._every:
            return
        self._last = now
        pad = max(0, self._width - len(text))
        self._width = len(text)
        self._stream.write("\r" + text + " " * pad)
        self._stream.flush()

    def bytes(self, label: str, done: int, total: int) -> None:
        pct = 100 * done // total if total else 100
        self.show(f"{label}: {size(done)} of {size(total)} ({pct}%)", force=done >= total)

    def clear(self) -> None:
        """Remove the line, so what follows starts on a clean one."""
        if self.enabled and self._width:
            self._stream.write("\r" + " " * self._width + "\r")
            self._stream.flush()
            self._width = 0
