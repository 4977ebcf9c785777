"""The contract between the agent's daemon and whatever runs a job (Docker or a script)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

import anyio

from dante.schemas.values import DockerPayload, ScriptPayload

Stream = Literal["stdout", "stderr"]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSpec:
    """One attempt of one job, as the executor needs it."""

    job_id: str
    attempt: int
    payload: DockerPayload | ScriptPayload
    #: The job's own folder: scripts run in it, containers see it as /workspace. Results are
    #: expected in its `out/` folder, which the executor creates.
    work_dir: Path
    #: GPU indices as detected (NVML order for NVIDIA).
    gpu_indices: tuple[int, ...] = ()
    #: Ask Docker for the GPUs. False on a provider whose GPUs are simulated: there is no
    #: device to hand over, and asking would fail on an engine without GPU support.
    request_gpus: bool = True
    #: Wall-clock limit; the job is stopped (timed_out) when it is reached. None: no limit.
    max_duration_s: float | None = None
    memory_limit_mb: int | None = None
    #: CPU cores the job may use (Docker only; scripts are not CPU-limited).
    cpu_limit: float | None = None
    #: Between the polite stop (SIGTERM) and the forced one (SIGKILL).
    stop_grace_s: float = 10.0


def job_environment(spec: RunSpec, work_dir: str) -> dict[str, str]:
    """What every job is told about itself, whatever runs it; `work_dir` is its folder as the
    job sees it (the host path for a script, /workspace in a container). Set after the job's
    own variables, so a job cannot be told otherwise."""
    return {
        "DANTE_JOB_ID": spec.job_id,
        "DANTE_ATTEMPT": str(spec.attempt),
        "DANTE_GPU_COUNT": str(len(spec.gpu_indices)),
        "DANTE_OUTPUT_DIR": f"{work_dir}/out",
        "DANTE_STOP_FILE": f"{work_dir}/stop-reason",
    }


def time_limit_reason(spec: RunSpec) -> tuple[str, str]:
    """The stop file's code and reason when the executor stops a job at its time limit."""
    return "max_duration", f"the job reached its time limit of {spec.max_duration_s:g} s"


@dataclass(frozen=True, slots=True)
class OutputLine:
    """A line the job printed, without its line break, and when the agent read it (UTC)."""

    at: datetime
    stream: Stream
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RunResult:
    """How a run ended.

    `error` is empty when the job ran; otherwise it says why it could not (image missing, no
    GPU support, interpreter missing) and `exit_code` is None. A process killed by signal N
    reports 128 + N, as shells and Docker do.
    """

    exit_code: int | None
    error: str = ""
    #: When the job's process or container started; None if it never did.
    started_at: datetime | None
    ended_at: datetime
    #: Stopped because max_duration_s passed.
    timed_out: bool = False
    #: Stopped because the caller set the stop event.
    stopped: bool = False

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and not (self.error or self.timed_out or self.stopped)


#: Receives output in batches, in order; called again only after the previous call returned.
OutputSink = Callable[[Sequence[OutputLine]], Awaitable[None]]
#: Called once, as soon as the job's process or container is running.
StartedHook = Callable[[], Awaitable[None]]


class Executor(Protocol):
    async def run(
        self,
        spec: RunSpec,
        *,
        on_output: OutputSink,
        stop: anyio.Event,
        on_started: StartedHook | None = None,
    ) -> RunResult:
        """Run the job to its end and report how it ended; never raises for the job's faults.

        Output reaches `on_output` while the job runs (every ~200 ms, or 100 lines). Setting
        `stop` ends the job: SIGTERM, then SIGKILL after `spec.stop_grace_s`. Cancelling the
        caller kills the job and cleans up (process group or container) before re-raising.
        """
        ...
