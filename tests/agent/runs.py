"""Helpers for executor tests: collecting output as it arrives, building run specs."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dante.agent.executors.spec import OutputLine, RunSpec
from dante.schemas.values import DockerPayload, ScriptPayload


@dataclass
class Collected:
    """An output sink that keeps every batch and when it arrived (monotonic seconds)."""

    batches: list[list[OutputLine]] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    started: list[float] = field(default_factory=list)

    async def __call__(self, batch: Sequence[OutputLine]) -> None:
        self.batches.append(list(batch))
        self.arrivals.append(time.monotonic())

    async def on_started(self) -> None:
        self.started.append(time.monotonic())

    @property
    def lines(self) -> list[OutputLine]:
        return [line for batch in self.batches for line in batch]

    def texts(self, stream: str | None = None) -> list[str]:
        return [line.text for line in self.lines if stream is None or line.stream == stream]


def script_spec(work_dir: Path, script: str, **fields: Any) -> RunSpec:
    interpreter = fields.pop("interpreter", "bash")
    payload = ScriptPayload(
        script=script,
        interpreter=interpreter,
        args=fields.pop("args", []),
        env=fields.pop("env", {}),
    )
    fields.setdefault("job_id", "job-1")
    fields.setdefault("attempt", 1)
    return RunSpec(payload=payload, work_dir=work_dir, **fields)


def docker_spec(work_dir: Path, image: str, command: list[str], **fields: Any) -> RunSpec:
    payload = DockerPayload(
        image=image,
        command=command,
        env=fields.pop("env", {}),
        network=fields.pop("network", False),
    )
    fields.setdefault("job_id", "job-1")
    fields.setdefault("attempt", 1)
    return RunSpec(payload=payload, work_dir=work_dir, **fields)


#: The start of a python3 script job that tries things: `attempt(name, action)` prints
#: "<name> ok", or "<name> denied" when the action raises OSError (one refusal does not hide
#: the next). `verdicts` reads them back.
PROBE = """
import os
def attempt(name, action):
    try:
        action()
        print(name, "ok")
    except OSError:
        print(name, "denied")
"""


def verdicts(lines: Sequence[str]) -> dict[str, str]:
    """What a `PROBE` script printed: {name: "ok" or "denied"}."""
    return dict(line.rsplit(" ", 1) for line in lines)
