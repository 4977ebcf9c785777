"""Running jobs: in Docker or as a local script, with live output, limits and clean stops."""

from dante.agent.executors.dispatch import ByPayload
from dante.agent.executors.docker import DockerExecutor
from dante.agent.executors.script import ScriptExecutor
from dante.agent.executors.spec import (
    Executor,
    OutputLine,
    OutputSink,
    RunResult,
    RunSpec,
    StartedHook,
)

__all__ = [
    "ByPayload",
    "DockerExecutor",
    "Executor",
    "OutputLine",
    "OutputSink",
    "RunResult",
    "RunSpec",
    "ScriptExecutor",
    "StartedHook",
]
