"""Running a vendor's command line tool with a time limit, and reading numbers out of its text."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from typing import Final

from dante.agent.gpus.backend import BackendUnavailable

#: Runs a tool (argv) and returns its standard output; raises BackendUnavailable if it cannot.
ToolRunner = Callable[[Sequence[str]], str]

DEFAULT_TIMEOUT_S: Final = 15.0
_NOT_REPORTED: Final = frozenset({"", "n/a", "na", "none", "unknown", "not supported"})


def run_tool(argv: Sequence[str], *, timeout_s: float = DEFAULT_TIMEOUT_S) -> str:
    """Run `argv` and return its stdout; any way it can fail becomes a `BackendUnavailable`."""
    tool = argv[0]
    path = shutil.which(tool)
    if path is None:
        raise BackendUnavailable(f"{tool} is not installed (not found on PATH)")
    try:
        done = subprocess.run(  # noqa: S603 - argv is ours, never a shell string
            [path, *argv[1:]],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise BackendUnavailable(f"{tool} did not answer within {timeout_s:g} s") from None
    except OSError as exc:
        raise BackendUnavailable(f"{tool} could not be run: {exc}") from exc
    if done.returncode != 0:
        detail = _last_line(done.stderr) or _last_line(done.stdout) or "no output"
        raise BackendUnavailable(f"{tool} failed with exit code {done.returncode}: {detail}")
    return done.stdout


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def reported(value: object) -> str | None:
    """The text of a reported value, or None where the tool says it has none ("N/A", "")."""
    if value is None:
        return None
    text = str(value).strip()
    lowered = text.lower()
    # rocm-smi writes e.g. "N/A (Secondary die)" for the second die of an MI250.
    if lowered in _NOT_REPORTED or lowered.startswith("n/a"):
        return None
    return text


def as_int(value: object) -> int | None:
    """An integer out of "68702699520", 17179869184 or "220.0"; None when absent or unreadable."""
    text = reported(value)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return round(float(text))
    except ValueError:
        return None
