"""Choosing the executor by payload kind."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from dante.agent.executors import ByPayload, Executor, OutputSink, RunResult, RunSpec, StartedHook
from dante.agent.executors.spec import utc_now
from tests.agent.runs import Collected, docker_spec, script_spec

pytestmark = pytest.mark.anyio


class Recorder:
    def __init__(self, name: str) -> None:
        self.name = name
        self.runs: list[RunSpec] = []

    async def run(
        self,
        spec: RunSpec,
        *,
        on_output: OutputSink,
        stop: anyio.Event,
        on_started: StartedHook | None = None,
    ) -> RunResult:
        self.runs.append(spec)
        return RunResult(exit_code=0, started_at=None, ended_at=utc_now(), error=self.name)


async def test_each_payload_goes_to_its_executor(tmp_path: Path) -> None:
    docker, script = Recorder("docker"), Recorder("script")
    executor: Executor = ByPayload(docker=docker, script=script)

    on_docker = await executor.run(
        docker_spec(tmp_path, "busybox", ["true"]), on_output=Collected(), stop=anyio.Event()
    )
    on_script = await executor.run(
        script_spec(tmp_path, "true"), on_output=Collected(), stop=anyio.Event()
    )

    assert (on_docker.error, on_script.error) == ("docker", "script")
    assert len(docker.runs) == len(script.runs) == 1
