"""Helpers for GPU backend tests: a tool runner that replays recorded outputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from dante.agent.gpus import BackendUnavailable

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(relative: str) -> str:
    return (FIXTURES / relative).read_text()


class Replay:
    """Answers each command line with its recorded output, and remembers what was run."""

    def __init__(self, outputs: Mapping[tuple[str, ...], str]) -> None:
        self._outputs = dict(outputs)
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, argv: Sequence[str]) -> str:
        key = tuple(argv)
        self.calls.append(key)
        if key not in self._outputs:
            raise BackendUnavailable(f"{argv[0]} failed with exit code 1: no recording")
        return self._outputs[key]
