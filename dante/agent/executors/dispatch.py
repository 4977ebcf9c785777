"""One executor for every job: Docker payloads to Docker, scripts to the script executor."""

from __future__ import annotations

import anyio

from dante.agent.executors.spec import Executor, OutputSink, RunResult, RunSpec, StartedHook
from dante.schemas.values import DockerPayload


class ByPayload:
    """Sends each run to the executor for its payload's kind."""

    def __init__(self, *, docker: Executor, script: Executor) -> None:
        self._docker = docker
        self._script = script

    async def run(
        self,
        spec: RunSpec,
        *,
        on_output: OutputSink,
        stop: anyio.Event,
        on_started: StartedHook | None = None,
    ) -> RunResult:
        executor = self._docker if isinstance(spec.payload, DockerPayload) else self._script
        return await executor.run(spec, on_output=on_output, stop=stop, on_started=on_started)
