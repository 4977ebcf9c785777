"""Running a job's script (python3 or bash) as a process group of its own, in the job's folder.

The script sees only its own environment: the job's variables, a minimal PATH, HOME (the work
folder), LANG and CUDA_VISIBLE_DEVICES; nothing of the agent's environment (tokens, keys)
reaches it. Memory is limited with RLIMIT_AS. Files are confined with Landlock where the
kernel has it (see `sandbox`): the job reads the system and writes its own folder, and never
sees the agent's credentials, configuration or other jobs. Stopping signals the whole process
group, so children the script started go too; a process that leaves the group (setsid)
escapes this, which only a container can prevent.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import resource
import shutil
import signal
import subprocess
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Final

import anyio
import structlog

from dante.agent.executors.output import LineSplitter, OutputBatcher, batched_output
from dante.agent.executors.sandbox import Confinement, Sandbox, SandboxUnavailable
from dante.agent.executors.spec import (
    OutputSink,
    RunResult,
    RunSpec,
    StartedHook,
    Stream,
    job_environment,
    time_limit_reason,
    utc_now,
)
from dante.agent.workspace import prepare_work_dir, write_stop_reason
from dante.schemas.values import ScriptPayload

log = structlog.get_logger(__name__)

DEFAULT_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SCRIPT_NAMES: Final = {"python3": "job.py", "bash": "job.sh"}
#: TMPDIR of the job, in its folder (an input of that name wins: tempfile then looks on).
TMP_DIR: Final = ".tmp"
#: After the job ends, how long its output pipes may take to close before they are abandoned
#: (a process that escaped the group could hold them open forever).
DRAIN_S: Final = 5.0
_READ_SIZE: Final = 65_536
_POLL_S: Final = 0.05


def script_environment(spec: RunSpec, payload: ScriptPayload, search_path: str) -> dict[str, str]:
    """The whole environment of the job's process: built from nothing, never inherited."""
    env = {
        "PATH": search_path,
        "HOME": str(spec.work_dir),
        "LANG": "C.UTF-8",
        # Output is read live; without this Python holds it in a buffer until exit.
        "PYTHONUNBUFFERED": "1",
    }
    env.update(payload.env)
    # Set last, so a job cannot reach GPUs it was not given: CUDA numbers devices in PCI
    # order (like NVML, whose indices these are) only when asked to.
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(index) for index in spec.gpu_indices)
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    env.update(job_environment(spec, str(spec.work_dir)))
    # Temporary files of its own, removed with its folder (and out of the way of a /tmp
    # the sandbox grants only around the agent's folders).
    env["TMPDIR"] = str(spec.work_dir / TMP_DIR)
    return env


class ScriptExecutor:
    """Runs `ScriptPayload` jobs as local processes.

    `search_path` is where interpreters are looked up and the PATH the job gets (a provider
    can put a conda environment first). `on_spawn(spec, pgid)` is called as soon as the
    process exists, with its process group id, so the daemon can journal it and kill the
    group should the agent itself die before the job. `sandbox` says how jobs are confined
    and which paths (the agent's credentials, configuration, data) they must never see.
    """

    def __init__(
        self,
        *,
        search_path: str = DEFAULT_PATH,
        on_spawn: Callable[[RunSpec, int], None] | None = None,
        sandbox: Sandbox | None = None,
    ) -> None:
        self._search_path = search_path
        self._on_spawn = on_spawn
        self.sandbox = sandbox or Sandbox()

    async def run(
        self,
        spec: RunSpec,
        *,
        on_output: OutputSink,
        stop: anyio.Event,
        on_started: StartedHook | None = None,
    ) -> RunResult:
        payload = spec.payload
        if not isinstance(payload, ScriptPayload):
            raise TypeError(f"ScriptExecutor cannot run a {type(payload).__name__}")
        bound = log.bind(job_id=spec.job_id, attempt=spec.attempt, executor="script")
        interpreter = shutil.which(payload.interpreter, path=self._search_path)
        if interpreter is None:
            return _not_run(f"{payload.interpreter} is not installed on this provider")
        prepare_work_dir(spec.work_dir)
        with contextlib.suppress(FileExistsError):
            (spec.work_dir / TMP_DIR).mkdir()
        script = script_path(spec)
        script.write_text(payload.script)
        try:
            # Opens a file per rule, and may list a folder or two: off the event loop (and
            # shielded: a ruleset built and then dropped by a cancel would leak its fd).
            with anyio.CancelScope(shield=True):
                confinement = await anyio.to_thread.run_sync(
                    functools.partial(
                        self.sandbox.prepare,
                        work_dir=spec.work_dir,
                        search_path=self._search_path,
                        interpreter=interpreter,
                    )
                )
        except (SandboxUnavailable, OSError) as exc:
            return _not_run(f"could not sandbox the script: {exc}")
        try:
            process = await asyncio.create_subprocess_exec(
                interpreter,
                str(script),
                *payload.args,
                cwd=spec.work_dir,
                env=script_environment(spec, payload, self._search_path),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                preexec_fn=_in_child(spec.memory_limit_mb, confinement),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            # e.g. a memory limit too small for the interpreter even to load
            return _not_run(f"could not start {payload.interpreter}: {exc}")
        finally:
            if confinement is not None:
                confinement.close()
        started_at = utc_now()
        if self._on_spawn is not None:
            try:
                # A new session: the process group id is the process id.
                self._on_spawn(spec, process.pid)
            except Exception as exc:
                bound.warning("on_spawn failed", error=repr(exc))
        try:
            result = await self._follow(
                process,
                spec,
                stop=stop,
                on_output=on_output,
                on_started=on_started,
                started_at=started_at,
            )
        finally:
            with anyio.CancelScope(shield=True):
                await _kill_group(process)
        bound.info(
            "script ended",
            exit_code=result.exit_code,
            timed_out=result.timed_out,
            stopped=result.stopped,
            seconds=round((result.ended_at - started_at).total_seconds(), 3),
        )
        return result

    async def _follow(
        self,
        process: asyncio.subprocess.Process,
        spec: RunSpec,
        *,
        stop: anyio.Event,
        on_output: OutputSink,
        on_started: StartedHook | None,
        started_at: datetime,
    ) -> RunResult:
        assert process.stdout is not None
        assert process.stderr is not None
        async with batched_output(on_output) as out, anyio.create_task_group() as pumps:
            drained = [anyio.Event(), anyio.Event()]
            pumps.start_soon(_pump, process.stdout, "stdout", out, drained[0])
            pumps.start_soon(_pump, process.stderr, "stderr", out, drained[1])
            if on_started is not None:
                await on_started()
            timed_out, stopped = await _wait(process, spec, stop)
            # The script is gone; children it left in the group would keep the pipes open.
            _signal_group(process.pid, signal.SIGKILL)
            with anyio.move_on_after(DRAIN_S):
                for event in drained:
                    await event.wait()
            pumps.cancel_scope.cancel()
        assert process.returncode is not None
        return RunResult(
            exit_code=_exit_code(process.returncode),
            started_at=started_at,
            ended_at=utc_now(),
            timed_out=timed_out,
            stopped=stopped,
        )


async def _wait(
    process: asyncio.subprocess.Process, spec: RunSpec, stop: anyio.Event
) -> tuple[bool, bool]:
    """Wait for the process, the stop event or the time limit; returns (timed_out, stopped)."""
    with anyio.move_on_after(spec.max_duration_s) as deadline:
        async with anyio.create_task_group() as group:

            async def stop_requested() -> None:
                await stop.wait()
                group.cancel_scope.cancel()

            group.start_soon(stop_requested)
            await _exited(process)
            group.cancel_scope.cancel()
    if process.returncode is not None:
        return False, False
    timed_out = deadline.cancelled_caught
    if timed_out:
        write_stop_reason(spec.work_dir, *time_limit_reason(spec))
    await _terminate(process, spec.stop_grace_s)
    return timed_out, not timed_out


async def _terminate(process: asyncio.subprocess.Process, grace_s: float) -> None:
    """SIGTERM to the group, then SIGKILL to the group if it is still there after the grace."""
    _signal_group(process.pid, signal.SIGTERM)
    with anyio.move_on_after(grace_s):
        await _exited(process)
    if process.returncode is None:
        _signal_group(process.pid, signal.SIGKILL)
        await _exited(process)


async def _kill_group(process: asyncio.subprocess.Process) -> None:
    _signal_group(process.pid, signal.SIGKILL)
    await _exited(process)


async def _exited(process: asyncio.subprocess.Process) -> None:
    """Wait for the process itself to end.

    Not `process.wait()`: asyncio's wait also waits for the output pipes to close, which a
    child left running in the background delays for as long as it lives.
    """
    while process.returncode is None:  # noqa: ASYNC110 - asyncio offers no exit-only event
        await anyio.sleep(_POLL_S)


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    # The process was started in a new session, so its pid is its process group id.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


async def _pump(
    stream: asyncio.StreamReader, name: Stream, out: OutputBatcher, drained: anyio.Event
) -> None:
    splitter = LineSplitter()
    try:
        while chunk := await stream.read(_READ_SIZE):
            for line in splitter.feed(chunk):
                await out.add(name, line)
        for line in splitter.finish():
            await out.add(name, line)
    finally:
        drained.set()


def _in_child(
    memory_limit_mb: int | None, confinement: Confinement | None
) -> Callable[[], None] | None:
    """What the child does between fork and exec: only system calls, no locks, no imports."""
    if memory_limit_mb is None and confinement is None:
        return None
    limit = None if memory_limit_mb is None else memory_limit_mb * 1024 * 1024

    def apply() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        if confinement is not None:
            confinement.apply()

    return apply


def _exit_code(returncode: int) -> int:
    # asyncio reports death by signal N as -N; shells and Docker say 128 + N.
    return 128 - returncode if returncode < 0 else returncode


def _not_run(error: str) -> RunResult:
    return RunResult(exit_code=None, error=error, started_at=None, ended_at=utc_now())


def script_path(spec: RunSpec) -> Path:
    """Where the job's script is written in its work folder."""
    assert isinstance(spec.payload, ScriptPayload)
    return spec.work_dir / SCRIPT_NAMES[spec.payload.interpreter]
