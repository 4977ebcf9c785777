"""What the daemon runs jobs with on this machine: executors, telemetry and resource limits."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from dante.agent.config import AgentConfig, ExecutorChoice
from dante.agent.executors import ByPayload, DockerExecutor, Executor, RunSpec, ScriptExecutor
from dante.agent.executors.sandbox import Sandbox
from dante.agent.gpus.nvidia_smi import NvidiaSmiTelemetry
from dante.agent.gpus.telemetry import GpuTelemetry, NvmlTelemetry, Reading, SimulatedTelemetry
from dante.schemas.values import Gpu

log = structlog.get_logger(__name__)


class SetupError(Exception):
    """This machine cannot run the agent as asked; the message says why."""


class NoTelemetry:
    """For GPUs without a telemetry backend: samples carry the time, no readings."""

    def sample(self, indices: Sequence[int]) -> dict[int, Reading]:
        return {index: Reading() for index in indices}

    def close(self) -> None:
        """Nothing to release."""


def telemetry_for(gpus: Sequence[Gpu]) -> GpuTelemetry:
    if gpus and all(gpu.simulated for gpu in gpus):
        return SimulatedTelemetry(gpus)
    if gpus and gpus[0].vendor == "nvidia":
        try:
            import pynvml

            return NvmlTelemetry(pynvml)
        except Exception as exc:
            if shutil.which("nvidia-smi") is not None:
                log.info("NVML telemetry unavailable; reading nvidia-smi", error=repr(exc))
                return NvidiaSmiTelemetry()
            log.warning("NVML telemetry unavailable; usage ticks carry time only", error=repr(exc))
    return NoTelemetry()


def docker_engine() -> tuple[Any | None, str]:
    """A client of the local Docker engine if one answers, else None and why not."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except DockerException as exc:
        return None, str(exc)
    return client, ""


@dataclass(frozen=True, slots=True)
class Executors:
    """The executor the daemon runs jobs with, and what it can do."""

    executor: Executor
    kind: ExecutorChoice
    #: Docker's executor, for removing containers a crash left behind; None for scripts only.
    docker: DockerExecutor | None


def script_sandbox(config: AgentConfig) -> Sandbox:
    """How script jobs are confined, hiding what is the agent's own: its credentials (the
    config folder), its `.env`, its work folder (journal, provider id, other jobs) and the
    platform's data folder where one machine runs both."""
    from dante.client.credentials import config_dir

    hidden = [config_dir(), config.work_dir]
    hidden += [path for path in (config.dotenv, config.data_dir) if path is not None]
    return Sandbox(mode=config.script_sandbox, hidden=tuple(hidden))


def build_executors(
    choice: ExecutorChoice | None,
    *,
    agent_id: str,
    on_spawn: Callable[[RunSpec, int], None],
    sandbox: Sandbox | None = None,
) -> Executors:
    """Docker (with scripts beside it) when an engine answers or is asked for, else scripts.

    `--executor docker` without an engine is an error: the provider asked for containers.
    """
    scripts = ScriptExecutor(on_spawn=on_spawn, sandbox=sandbox)
    if choice == "script":
        return Executors(executor=scripts, kind="script", docker=None)
    client, why = docker_engine()
    if client is None:
        if choice == "docker":
            raise SetupError(
                f"--executor docker, but no Docker engine answers ({why}); start Docker, or "
                "run jobs as local scripts with --executor script"
            )
        log.info("no Docker engine answers; running script jobs only", reason=why)
        return Executors(executor=scripts, kind="script", docker=None)
    docker = DockerExecutor(client, agent_id=agent_id)
    return Executors(
        executor=ByPayload(docker=docker, script=scripts), kind="docker", docker=docker
    )


def machine_memory_mb() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    except (ValueError, OSError):
        return 0


@dataclass(frozen=True, slots=True)
class Limits:
    """Memory and CPU a job may use: what the provider set, else a share of the machine in
    proportion to the job's GPUs (a 2-GPU job on a 4-GPU machine gets half), so jobs
    cannot starve each other or the agent.

    The default memory share applies to containers only: a script's limit is an address
    space limit (RLIMIT_AS), which CUDA exceeds by far without using that memory, so
    scripts are limited only when the provider says so.
    """

    memory_mb: int | None
    cpus: float | None
    machine_memory_mb: int
    machine_cpus: int
    machine_gpus: int

    def for_job(self, gpus: int, *, container: bool) -> tuple[int | None, float | None]:
        share = max(1, gpus) / max(1, self.machine_gpus)
        memory = self.memory_mb
        if memory is None and container and self.machine_memory_mb > 0:
            memory = max(256, int(self.machine_memory_mb * 0.9 * share))
        cpus = self.cpus
        if cpus is None and container:
            cpus = max(1.0, round(self.machine_cpus * share, 2))
        return memory, cpus
