"""Running a job's Docker image as a locked-down container, its work folder at /workspace.

The container gets no network unless the job asks, no capabilities, no privilege escalation,
a process limit, the job's memory and CPU limits, a read-only root filesystem (with a tmpfs
at /tmp), the agent's own user id (so the files it writes are the agent's to pack and
delete; a root agent's jobs run as nobody, 65534, and their folder is given to that user;
an image's USER is overridden either way), and only its work folder from the host. GPUs are
requested from the NVIDIA runtime only for real GPUs. Every container is labelled with the
job and the agent, and removed however the run ends, a failed start included.

The Docker SDK is blocking; each call runs in a worker thread.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Final, TypeVar

import anyio
import docker
import structlog
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.models.containers import Container

from dante.agent.executors.docker_logs import DockerLogLines
from dante.agent.executors.output import OutputBatcher, batched_output
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
from dante.schemas.values import DockerPayload

log = structlog.get_logger(__name__)

WORKSPACE: Final = "/workspace"
#: Who a root agent's containers run as: nobody, never root (an image's USER is not used).
UNPRIVILEGED_USER: Final = "65534:65534"
LABEL_JOB: Final = "dante.job_id"
LABEL_ATTEMPT: Final = "dante.attempt"
LABEL_AGENT: Final = "dante.agent"
#: How long log streams may take to end after the container did.
DRAIN_S: Final = 5.0
_T = TypeVar("_T")


def container_config(
    spec: RunSpec,
    *,
    agent_id: str,
    user: str,
    shm_size_mb: int,
    pids_limit: int,
    tmp_size_mb: int = 1024,
) -> dict[str, Any]:
    """The keyword arguments of `containers.create` for this run."""
    payload = spec.payload
    assert isinstance(payload, DockerPayload)
    environment = {"HOME": WORKSPACE, **payload.env, **job_environment(spec, WORKSPACE)}
    config: dict[str, Any] = {
        "image": payload.image,
        "command": list(payload.command) or None,
        "environment": environment,
        "working_dir": WORKSPACE,
        "volumes": {str(spec.work_dir.resolve()): {"bind": WORKSPACE, "mode": "rw"}},
        "labels": {
            LABEL_JOB: spec.job_id,
            LABEL_ATTEMPT: str(spec.attempt),
            LABEL_AGENT: agent_id,
        },
        "network_mode": "bridge" if payload.network else "none",
        "privileged": False,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        # A small init as PID 1 passes SIGTERM on to the job and reaps its zombies.
        "init": True,
        "pids_limit": pids_limit,
        # PyTorch data loaders share tensors through /dev/shm; Docker's 64 MB default breaks them.
        "shm_size": f"{shm_size_mb}m",
        "user": user,
        # Nothing of the image can be changed: the job writes /workspace, /tmp and /dev/shm.
        "read_only": True,
        "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={tmp_size_mb}m,mode=1777"},  # noqa: S108
        "stdin_open": False,
        "tty": False,
    }
    if spec.memory_limit_mb is not None:
        config["mem_limit"] = f"{spec.memory_limit_mb}m"
        config["memswap_limit"] = f"{spec.memory_limit_mb}m"  # no swap beyond the limit
    if spec.cpu_limit is not None:
        config["nano_cpus"] = round(spec.cpu_limit * 1e9)
    if spec.gpu_indices and spec.request_gpus:
        config["device_requests"] = [
            docker.types.DeviceRequest(
                driver="nvidia",
                device_ids=[str(index) for index in spec.gpu_indices],
                capabilities=[["gpu"]],
            )
        ]
    return config


class DockerExecutor:
    """Runs `DockerPayload` jobs on the local Docker engine.

    `agent_id` labels this agent's containers, so `remove_leftovers` after a crash removes
    only its own. Images are not pulled unless `pull_missing` (a provider decides what it runs).
    """

    def __init__(
        self,
        client: docker.DockerClient | None = None,
        *,
        agent_id: str = "dante",
        pull_missing: bool = False,
        pull_timeout_s: float = 300.0,
        shm_size_mb: int = 1024,
        pids_limit: int = 4096,
        tmp_size_mb: int = 1024,
        user: str | None = None,
    ) -> None:
        self._client = client
        self._agent_id = agent_id
        self._pull_missing = pull_missing
        self._pull_timeout_s = pull_timeout_s
        self._shm_size_mb = shm_size_mb
        self._pids_limit = pids_limit
        self._tmp_size_mb = tmp_size_mb
        self._user = user if user is not None else default_user()

    async def run(
        self,
        spec: RunSpec,
        *,
        on_output: OutputSink,
        stop: anyio.Event,
        on_started: StartedHook | None = None,
    ) -> RunResult:
        payload = spec.payload
        if not isinstance(payload, DockerPayload):
            raise TypeError(f"DockerExecutor cannot run a {type(payload).__name__}")
        bound = log.bind(job_id=spec.job_id, attempt=spec.attempt, image=payload.image)
        # Each run has its own threads: a stuck engine call cannot starve other jobs.
        calls = _Calls(anyio.CapacityLimiter(8))
        try:
            client = await self._connect(calls)
        except DockerException as exc:
            return _not_run(f"no Docker engine answers: {exc}")
        prepare_work_dir(spec.work_dir)
        await anyio.to_thread.run_sync(give_to_user, spec.work_dir, self._user)
        problem = await self._ensure_image(client, payload.image, calls)
        if problem:
            bound.info("container not started", error=problem)
            return _not_run(problem)
        config = container_config(
            spec,
            agent_id=self._agent_id,
            user=self._user,
            shm_size_mb=self._shm_size_mb,
            pids_limit=self._pids_limit,
            tmp_size_mb=self._tmp_size_mb,
        )
        try:
            container = await calls.run(partial(client.containers.create, **config))
        except APIError as exc:
            return _not_run(f"the container could not be created: {_explain(exc)}")
        try:
            result = await self._run_container(
                container, spec, calls, stop=stop, on_output=on_output, on_started=on_started
            )
        finally:
            with anyio.CancelScope(shield=True):
                await _remove(container, calls)
        bound.info(
            "container ended",
            exit_code=result.exit_code,
            error=result.error or None,
            timed_out=result.timed_out,
            stopped=result.stopped,
        )
        return result

    async def remove_leftovers(self) -> list[str]:
        """Remove this agent's containers left by a previous run (a crash); return their ids."""
        calls = _Calls(anyio.CapacityLimiter(4))
        client = await self._connect(calls)
        found: list[Container] = await calls.run(
            partial(
                client.containers.list,
                all=True,
                filters={"label": f"{LABEL_AGENT}={self._agent_id}"},
            )
        )
        for container in found:
            await _remove(container, calls)
        return [str(container.id) for container in found]

    async def _connect(self, calls: _Calls) -> docker.DockerClient:
        if self._client is None:
            self._client = await calls.run(docker.from_env)
        return self._client

    async def _ensure_image(self, client: docker.DockerClient, image: str, calls: _Calls) -> str:
        """Empty when the image is here (or was pulled); otherwise why it is not."""
        try:
            await calls.run(partial(client.images.get, image))
        except ImageNotFound:
            pass
        except APIError as exc:
            return f"could not look up image {image}: {_explain(exc)}"
        else:
            return ""
        if not self._pull_missing:
            return f"image {image} is not present on this provider (it does not pull images)"
        with anyio.move_on_after(self._pull_timeout_s):
            try:
                await calls.run(partial(client.images.pull, image), abandon=True)
            except DockerException as exc:
                return (
                    f"image {image} is not present on this provider and could not be pulled: "
                    f"{_explain(exc)}"
                )
            return ""
        return (
            f"image {image} is not present on this provider and pulling it took longer "
            f"than {self._pull_timeout_s:g} s"
        )

    async def _run_container(
        self,
        container: Container,
        spec: RunSpec,
        calls: _Calls,
        *,
        stop: anyio.Event,
        on_output: OutputSink,
        on_started: StartedHook | None,
    ) -> RunResult:
        try:
            await calls.run(container.start)
        except APIError as exc:
            return _not_run(_start_error(exc, spec))
        started_at = utc_now()
        error = ""
        async with batched_output(on_output) as out, anyio.create_task_group() as streams:
            exited = anyio.Event()
            drained = [anyio.Event(), anyio.Event()]
            for stream, done in zip(("stdout", "stderr"), drained, strict=True):
                streams.start_soon(
                    partial(_follow_logs, exited=exited, drained=done),
                    container,
                    stream,
                    out,
                    calls,
                )
            if on_started is not None:
                await on_started()
            try:
                exit_code, timed_out, stopped = await _wait(container, spec, stop, calls)
            except DockerException as exc:
                # The engine failed under the job (restarted, disk full): not the job's fault.
                error = f"the Docker engine failed during the run: {_explain(exc)}"
                exit_code, timed_out, stopped = None, False, stop.is_set()
            finally:
                exited.set()
            with anyio.move_on_after(DRAIN_S):
                for event in drained:
                    await event.wait()
            streams.cancel_scope.cancel()
        return RunResult(
            exit_code=exit_code,
            error=error,
            started_at=started_at,
            ended_at=utc_now(),
            timed_out=timed_out,
            stopped=stopped,
        )


def default_user() -> str:
    """The agent's own user and group, so the job's files are the agent's to pack and delete;
    for an agent running as root, nobody (65534), never root."""
    uid = os.getuid()
    return UNPRIVILEGED_USER if uid == 0 else f"{uid}:{os.getgid()}"


def give_to_user(work_dir: Path, user: str) -> None:
    """Make the work folder the container user's, so it can write its results there.

    Only a root agent running its jobs as another user has anything to do; links are changed
    themselves, never what they point at.
    """
    uid_text, _, gid_text = user.partition(":")
    if os.getuid() != 0 or not uid_text.isdigit() or int(uid_text) == 0:
        return
    uid = int(uid_text)
    gid = int(gid_text) if gid_text.isdigit() else uid
    os.chown(work_dir, uid, gid, follow_symlinks=False)
    for root, folders, files in os.walk(work_dir):
        for name in (*folders, *files):
            os.chown(Path(root, name), uid, gid, follow_symlinks=False)


class _Calls:
    """Blocking SDK calls in worker threads, limited per run."""

    def __init__(self, limiter: anyio.CapacityLimiter) -> None:
        self._limiter = limiter

    async def run(self, call: Callable[[], _T], *, abandon: bool = False) -> _T:
        return await anyio.to_thread.run_sync(
            call, abandon_on_cancel=abandon, limiter=self._limiter
        )


async def _wait(
    container: Container, spec: RunSpec, stop: anyio.Event, calls: _Calls
) -> tuple[int | None, bool, bool]:
    """Wait for the container, the stop event or the time limit: (exit code, timed out, stopped)."""
    status: dict[str, Any] | None = None
    with anyio.move_on_after(spec.max_duration_s) as deadline:
        async with anyio.create_task_group() as group:

            async def stop_requested() -> None:
                await stop.wait()
                group.cancel_scope.cancel()

            group.start_soon(stop_requested)
            status = await calls.run(container.wait, abandon=True)
            group.cancel_scope.cancel()
    if status is not None:
        return _status_code(status), False, False
    timed_out = deadline.cancelled_caught
    if timed_out:
        write_stop_reason(spec.work_dir, *time_limit_reason(spec))
    # Docker's stop: SIGTERM (passed on by the init), SIGKILL after the grace, in whole seconds.
    grace = max(0, math.ceil(spec.stop_grace_s))
    await calls.run(partial(container.stop, timeout=grace))
    final: dict[str, Any] = await calls.run(container.wait)
    return _status_code(final), timed_out, not timed_out


async def _follow_logs(
    container: Container,
    stream: Stream,
    out: OutputBatcher,
    calls: _Calls,
    *,
    exited: anyio.Event,
    drained: anyio.Event,
) -> None:
    """Follow one stream of the container's log until it ends, then read what follow missed.

    The engine can end a followed log when the container exits before the last message (a
    line without a final line break) reaches the log; Docker 20.10 does so in a few percent
    of runs. Once the container has exited, the log read again from the last message seen
    holds it.
    """
    lines = DockerLogLines()
    last_frame = b""
    try:
        frames = await calls.run(partial(_logs, container, stream, follow=True))
        while (frame := await calls.run(partial(next, frames, None), abandon=True)) is not None:
            last_frame = frame
            for at, text in lines.feed(frame):
                await out.add(stream, text, at)
        await exited.wait()
        for at, text in lines.feed(await _missed(container, stream, last_frame, lines, calls)):
            await out.add(stream, text, at)
        for at, text in lines.finish():
            await out.add(stream, text, at)
    except DockerException as exc:
        log.warning("container log stream failed", stream=stream, error=_explain(exc))
    finally:
        drained.set()


async def _missed(
    container: Container, stream: Stream, last_frame: bytes, lines: DockerLogLines, calls: _Calls
) -> bytes:
    """The log messages after `last_frame` (all of them if none was seen)."""
    if not last_frame:
        whole: bytes = await calls.run(partial(_logs, container, stream, follow=False))
        return whole
    # A millisecond early: the timestamp went through a float; the rest is found by content.
    since = lines.last_at.timestamp() - 0.001
    recent: bytes = await calls.run(partial(_logs, container, stream, follow=False, since=since))
    position = recent.rfind(last_frame)
    if position < 0:
        log.warning("container log could not be matched after the stream ended", stream=stream)
        return b""
    return recent[position + len(last_frame) :]


def _logs(container: Container, stream: Stream, *, follow: bool, since: float | None = None) -> Any:
    return container.logs(
        stdout=stream == "stdout",
        stderr=stream == "stderr",
        stream=follow,
        follow=follow,
        timestamps=True,
        since=since,
    )


async def _remove(container: Container, calls: _Calls) -> None:
    try:
        await calls.run(partial(container.remove, force=True, v=True))
    except NotFound:
        pass  # already gone
    except DockerException as exc:
        log.exception("container not removed", container=container.id, error=_explain(exc))


def _start_error(exc: APIError, spec: RunSpec) -> str:
    detail = _explain(exc)
    wants_gpus = bool(spec.gpu_indices) and spec.request_gpus
    if wants_gpus and any(word in detail.lower() for word in ("device driver", "nvidia", "gpu")):
        return f"the Docker engine has no NVIDIA GPU support: {detail}"
    return f"the container could not start: {detail}"


def _explain(exc: DockerException) -> str:
    explanation = getattr(exc, "explanation", None)
    if isinstance(explanation, bytes):
        explanation = explanation.decode(errors="replace")
    return str(explanation or exc)


def _status_code(status: dict[str, Any]) -> int | None:
    code = status.get("StatusCode")
    return code if isinstance(code, int) else None


def _not_run(error: str) -> RunResult:
    return RunResult(exit_code=None, error=error, started_at=None, ended_at=utc_now())
