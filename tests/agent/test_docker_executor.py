"""The Docker executor against the real engine, with an image imported from busybox."""

from __future__ import annotations

import os
import time
from pathlib import Path

import anyio
import docker
import pytest

from dante.agent.executors.docker import (
    LABEL_AGENT,
    LABEL_JOB,
    DockerExecutor,
    container_config,
)
from dante.agent.executors.spec import RunResult, RunSpec
from tests.agent.conftest import _rootfs_tar
from tests.agent.runs import Collected, docker_spec, script_spec

pytestmark = [pytest.mark.anyio, pytest.mark.docker]


@pytest.fixture
def executor(docker_client: docker.DockerClient, agent_id: str) -> DockerExecutor:
    return DockerExecutor(docker_client, agent_id=agent_id)


@pytest.fixture
def job_id(request: pytest.FixtureRequest) -> str:
    # Unique per test, so leftover checks cannot see another test's (or session's) container.
    return f"t{abs(hash(request.node.nodeid)) % 10**10}-{time.monotonic_ns() % 10**6}"


def leftovers(client: docker.DockerClient, job_id: str) -> list[str]:
    found = client.containers.list(all=True, filters={"label": f"{LABEL_JOB}={job_id}"})
    return [container.id for container in found]


async def run(
    executor: DockerExecutor, spec: RunSpec, stop: anyio.Event | None = None
) -> tuple[RunResult, Collected]:
    collected = Collected()
    result = await executor.run(
        spec, on_output=collected, stop=stop or anyio.Event(), on_started=collected.on_started
    )
    return result, collected


async def test_output_streams_and_exit_code(
    executor: DockerExecutor,
    busybox_image: str,
    tmp_path: Path,
    job_id: str,
    docker_client: docker.DockerClient,
) -> None:
    command = ["sh", "-c", "echo hello; echo oops >&2; printf 'tail'; exit 3"]

    result, out = await run(executor, docker_spec(tmp_path, busybox_image, command, job_id=job_id))

    assert result.error == ""
    assert result.exit_code == 3
    assert out.texts("stdout") == ["hello", "tail"]
    assert out.texts("stderr") == ["oops"]
    assert result.started_at is not None
    assert all(line.at.utcoffset() is not None for line in out.lines)
    assert len(out.started) == 1
    assert leftovers(docker_client, job_id) == []


async def test_output_arrives_while_the_container_runs(
    executor: DockerExecutor, busybox_image: str, tmp_path: Path, job_id: str
) -> None:
    command = ["sh", "-c", "for i in 1 2 3 4; do echo tick $i; sleep 0.5; done"]

    result, out = await run(executor, docker_spec(tmp_path, busybox_image, command, job_id=job_id))
    finished = time.monotonic()

    assert result.exit_code == 0
    assert out.texts() == ["tick 1", "tick 2", "tick 3", "tick 4"]
    assert len(out.batches) >= 3
    assert finished - out.arrivals[0] > 1.0


async def test_no_network_unless_asked(
    executor: DockerExecutor, busybox_image: str, tmp_path: Path, job_id: str
) -> None:
    command = ["sh", "-c", "ls /sys/class/net"]

    closed, out_closed = await run(
        executor, docker_spec(tmp_path / "a", busybox_image, command, job_id=job_id)
    )
    opened, out_opened = await run(
        executor,
        docker_spec(tmp_path / "b", busybox_image, command, job_id=job_id, network=True),
    )

    assert closed.exit_code == opened.exit_code == 0
    assert out_closed.texts() == ["lo"]
    assert "eth0" in out_opened.texts()


async def test_container_is_unprivileged(
    executor: DockerExecutor, busybox_image: str, tmp_path: Path, job_id: str
) -> None:
    # No capabilities at all, no privilege escalation, no access to the host's devices.
    command = ["sh", "-c", "grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status; ls /dev"]

    result, out = await run(executor, docker_spec(tmp_path, busybox_image, command, job_id=job_id))

    assert result.exit_code == 0
    status = dict(line.split(":\t") for line in out.texts()[:3])
    assert status == {
        "CapEff": "0000000000000000",
        "CapBnd": "0000000000000000",
        "NoNewPrivs": "1",
    }
    assert "sda" not in out.texts() and "nvme0" not in out.texts()


async def test_workspace_is_the_work_folder_and_results_reach_the_host(
    executor: DockerExecutor, busybox_image: str, tmp_path: Path, job_id: str
) -> None:
    (tmp_path / "input.txt").write_text("from the renter\n")
    command = [
        "sh",
        "-c",
        'pwd; echo "$HOME"; cat input.txt; echo 42 > "$DANTE_OUTPUT_DIR/answer.txt"; id -u',
    ]

    result, out = await run(executor, docker_spec(tmp_path, busybox_image, command, job_id=job_id))

    assert result.exit_code == 0
    # The agent's own user; a root agent's jobs run as nobody, never as root.
    user = 65534 if os.getuid() == 0 else os.getuid()
    assert out.texts() == [
        "/workspace",
        "/workspace",
        "from the renter",
        str(user),
    ]
    answer = tmp_path / "out" / "answer.txt"
    assert answer.read_text() == "42\n"
    assert answer.stat().st_uid == user


async def test_the_job_knows_its_id_attempt_gpus_and_stop_file(
    executor: DockerExecutor, busybox_image: str, tmp_path: Path, job_id: str
) -> None:
    command = [
        "sh",
        "-c",
        'echo "$DANTE_JOB_ID $DANTE_ATTEMPT $DANTE_GPU_COUNT $DANTE_OUTPUT_DIR $DANTE_STOP_FILE"',
    ]
    # Simulated GPUs: two assigned, none requested from the engine. The job's own variables
    # cannot say otherwise.
    spec = docker_spec(
        tmp_path, busybox_image, command, job_id=job_id, attempt=3, gpu_indices=(0, 1),
        request_gpus=False, env={"DANTE_JOB_ID": "forged", "DANTE_GPU_COUNT": "8"},
    )  # fmt: skip

    result, out = await run(executor, spec)

    assert result.exit_code == 0, out.texts()
    assert out.texts() == [f"{job_id} 3 2 /workspace/out /workspace/stop-reason"]


async def test_root_filesystem_is_read_only_with_a_tmpfs_at_tmp(
    executor: DockerExecutor, busybox_image: str, tmp_path: Path, job_id: str
) -> None:
    script = (
        "touch /etc/changed 2>/dev/null && echo etc writable || echo etc read-only; "
        "touch /tmp/scratch && echo tmp writable; "
        "touch /workspace/out/result && echo workspace writable; "
        "grep ' /tmp ' /proc/mounts | cut -d' ' -f3; id -u"
    )
    spec = docker_spec(tmp_path, busybox_image, ["sh", "-c", script], job_id=job_id)

    result, out = await run(executor, spec)

    assert result.exit_code == 0, out.texts()
    etc, tmp, workspace, tmp_type, uid = out.texts()
    assert (etc, tmp, workspace, tmp_type) == (
        "etc read-only",
        "tmp writable",
        "workspace writable",
        "tmpfs",
    )
    assert uid != "0"
    assert (tmp_path / "out" / "result").exists()


async def test_the_time_limit_is_explained_before_the_sigterm(
    executor: DockerExecutor, busybox_image: str, tmp_path: Path, job_id: str
) -> None:
    script = (
        "trap 'cat \"$DANTE_STOP_FILE\"; exit 0' TERM; echo ready; while true; do sleep 0.1; done"
    )
    spec = docker_spec(
        tmp_path, busybox_image, ["sh", "-c", script], job_id=job_id, max_duration_s=2,
        stop_grace_s=5,
    )  # fmt: skip

    result, out = await run(executor, spec)

    assert result.timed_out and result.exit_code == 0, out.texts()
    assert out.texts() == ["ready", "max_duration: the job reached its time limit of 2 s"]


async def test_job_environment_reaches_the_container(
    executor: DockerExecutor, busybox_image: str, tmp_path: Path, job_id: str
) -> None:
    spec = docker_spec(
        tmp_path, busybox_image, ["sh", "-c", "echo $EPOCHS"], job_id=job_id, env={"EPOCHS": "3"}
    )

    _, out = await run(executor, spec)

    assert out.texts() == ["3"]


async def test_memory_and_cpu_limits_are_applied(
    executor: DockerExecutor, busybox_image: str, tmp_path: Path, job_id: str
) -> None:
    # cgroup v2 names first, then v1.
    cg = "/sys/fs/cgroup"
    script = (
        f"cat {cg}/memory.max 2>/dev/null || cat {cg}/memory/memory.limit_in_bytes; "
        f"cat {cg}/cpu.max 2>/dev/null || "
        f"echo $(cat {cg}/cpu/cpu.cfs_quota_us) $(cat {cg}/cpu/cpu.cfs_period_us)"
    )
    command = ["sh", "-c", script]
    spec = docker_spec(
        tmp_path, busybox_image, command, job_id=job_id, memory_limit_mb=64, cpu_limit=0.5
    )

    result, out = await run(executor, spec)

    assert result.exit_code == 0
    memory, cpu = out.texts()
    assert int(memory) == 64 * 1024 * 1024
    quota, period = (int(n) for n in cpu.split())
    assert quota / period == 0.5


async def test_a_container_gets_its_gpu_share_of_the_machine_not_all_of_it(
    executor: DockerExecutor, busybox_image: str, tmp_path: Path, job_id: str
) -> None:
    from dante.agent.setup import Limits

    # One GPU of four: a quarter of 90 % of the memory, a quarter of the cores.
    limits = Limits(
        memory_mb=None, cpus=None, machine_memory_mb=8192, machine_cpus=8, machine_gpus=4
    )
    memory, cpus = limits.for_job(1, container=True)
    cg = "/sys/fs/cgroup"
    script = f"cat {cg}/memory.max 2>/dev/null || cat {cg}/memory/memory.limit_in_bytes"
    spec = docker_spec(
        tmp_path, busybox_image, ["sh", "-c", script], job_id=job_id, memory_limit_mb=memory,
        cpu_limit=cpus,
    )  # fmt: skip

    result, out = await run(executor, spec)

    assert result.exit_code == 0, out.texts()
    assert (memory, cpus) == (1843, 2.0)
    assert out.texts() == [str(1843 * 1024 * 1024)]


async def test_time_limit_stops_the_container(
    executor: DockerExecutor,
    busybox_image: str,
    tmp_path: Path,
    job_id: str,
    docker_client: docker.DockerClient,
) -> None:
    spec = docker_spec(
        tmp_path,
        busybox_image,
        ["sh", "-c", "echo started; sleep 60"],
        job_id=job_id,
        max_duration_s=1,
        stop_grace_s=1,
    )
    began = time.monotonic()

    result, out = await run(executor, spec)

    assert result.timed_out
    assert not result.stopped
    assert result.exit_code == 128 + 15  # the init passed SIGTERM on; sh died of it
    assert out.texts() == ["started"]
    assert time.monotonic() - began < 15
    assert leftovers(docker_client, job_id) == []


async def test_stop_reaches_the_container_within_two_seconds(
    executor: DockerExecutor,
    busybox_image: str,
    tmp_path: Path,
    job_id: str,
    docker_client: docker.DockerClient,
) -> None:
    command = ["sh", "-c", "echo ready; while true; do sleep 1; done"]
    spec = docker_spec(tmp_path, busybox_image, command, job_id=job_id, stop_grace_s=1)
    stop = anyio.Event()
    collected = Collected()
    results: list[RunResult] = []

    async with anyio.create_task_group() as group:

        async def go() -> None:
            results.append(await executor.run(spec, on_output=collected, stop=stop))

        group.start_soon(go)
        with anyio.fail_after(30):
            while "ready" not in collected.texts():
                await anyio.sleep(0.05)
        stopped_at = time.monotonic()
        stop.set()
    ended = time.monotonic() - stopped_at

    [result] = results
    assert result.stopped
    assert not result.timed_out
    assert result.exit_code is not None and result.exit_code != 0
    assert ended < 2
    assert leftovers(docker_client, job_id) == []


async def test_gpu_request_on_an_engine_without_gpus_fails_cleanly(
    executor: DockerExecutor,
    busybox_image: str,
    tmp_path: Path,
    job_id: str,
    docker_client: docker.DockerClient,
) -> None:
    if "nvidia" in (docker_client.info().get("Runtimes") or {}):
        pytest.skip("this engine has the NVIDIA runtime; the failure cannot be shown here")
    spec = docker_spec(tmp_path, busybox_image, ["echo", "never"], job_id=job_id, gpu_indices=(0,))

    result, out = await run(executor, spec)

    assert result.exit_code is None
    assert result.started_at is None
    assert result.error.startswith("the Docker engine has no NVIDIA GPU support: ")
    assert 'could not select device driver "nvidia"' in result.error
    assert out.lines == []
    assert out.started == []
    # The created-but-never-started container was removed too.
    assert leftovers(docker_client, job_id) == []


async def test_simulated_gpus_are_not_requested_from_docker(
    executor: DockerExecutor, busybox_image: str, tmp_path: Path, job_id: str
) -> None:
    spec = docker_spec(
        tmp_path,
        busybox_image,
        ["sh", "-c", 'echo "[${CUDA_VISIBLE_DEVICES-unset}]"'],
        job_id=job_id,
        gpu_indices=(0, 1),
        request_gpus=False,
    )

    result, out = await run(executor, spec)

    assert result.exit_code == 0
    # Inside a container the runtime numbers the GPUs it hands over; the host's indices
    # would be wrong there, so the executor does not set them.
    assert out.texts() == ["[unset]"]


async def test_missing_image_is_reported_without_pulling(
    executor: DockerExecutor, tmp_path: Path, job_id: str
) -> None:
    spec = docker_spec(tmp_path, "dante-test/no-such-image:404", ["true"], job_id=job_id)

    result, _ = await run(executor, spec)

    assert result.exit_code is None
    assert result.error == (
        "image dante-test/no-such-image:404 is not present on this provider "
        "(it does not pull images)"
    )


async def test_missing_image_with_pulling_reports_why_the_pull_failed(
    docker_client: docker.DockerClient, agent_id: str, tmp_path: Path, job_id: str
) -> None:
    executor = DockerExecutor(
        docker_client, agent_id=agent_id, pull_missing=True, pull_timeout_s=60
    )
    spec = docker_spec(tmp_path, "dante-test/no-such-image:404", ["true"], job_id=job_id)

    result, _ = await run(executor, spec)

    assert result.exit_code is None
    assert result.error.startswith(
        "image dante-test/no-such-image:404 is not present on this provider and "
    )
    assert "could not be pulled" in result.error or "took longer" in result.error


async def test_a_command_that_does_not_exist_in_the_image(
    executor: DockerExecutor,
    busybox_image: str,
    tmp_path: Path,
    job_id: str,
    docker_client: docker.DockerClient,
) -> None:
    spec = docker_spec(tmp_path, busybox_image, ["/no/such/program"], job_id=job_id)

    result, _ = await run(executor, spec)

    # The engine refuses to start it (or the init reports 127): never a crash, never a leftover.
    assert result.exit_code == 127 or result.error.startswith("the container could not start")
    assert leftovers(docker_client, job_id) == []


async def test_cancelling_the_caller_removes_the_container(
    executor: DockerExecutor,
    busybox_image: str,
    tmp_path: Path,
    job_id: str,
    docker_client: docker.DockerClient,
) -> None:
    command = ["sh", "-c", "echo ready; sleep 60"]
    collected = Collected()

    with anyio.move_on_after(30):
        async with anyio.create_task_group() as group:

            async def go() -> None:
                await executor.run(
                    docker_spec(tmp_path, busybox_image, command, job_id=job_id),
                    on_output=collected,
                    stop=anyio.Event(),
                )

            group.start_soon(go)
            while "ready" not in collected.texts():
                await anyio.sleep(0.05)
            group.cancel_scope.cancel()

    assert leftovers(docker_client, job_id) == []


async def test_leftovers_of_this_agent_are_removed_and_no_one_elses(
    executor: DockerExecutor,
    busybox_image: str,
    docker_client: docker.DockerClient,
    agent_id: str,
    job_id: str,
) -> None:
    mine = docker_client.containers.create(
        busybox_image, ["true"], labels={LABEL_AGENT: agent_id, LABEL_JOB: job_id}
    )
    other = docker_client.containers.create(
        busybox_image, ["true"], labels={LABEL_AGENT: f"{agent_id}-other", LABEL_JOB: job_id}
    )
    try:
        removed = await executor.remove_leftovers()

        assert mine.id in removed
        assert other.id not in removed
        assert leftovers(docker_client, job_id) == [other.id]
    finally:
        other.remove(force=True)


async def test_a_script_payload_is_refused(executor: DockerExecutor, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="cannot run a ScriptPayload"):
        await executor.run(
            script_spec(tmp_path, "echo hi"), on_output=Collected(), stop=anyio.Event()
        )


def test_the_test_image_can_be_built_from_busybox(docker_client: docker.DockerClient) -> None:
    # The session fixture builds the image only when the engine lacks it; check that path.
    tag = f"build-check-{time.monotonic_ns()}"
    docker_client.api.import_image_from_data(
        _rootfs_tar(), repository="dante-test/busybox", tag=tag
    )
    image = f"dante-test/busybox:{tag}"
    try:
        output = docker_client.containers.run(
            image, ["sh", "-c", "echo built; id -un"], remove=True, network_mode="none"
        )
        assert output == b"built\nroot\n"
    finally:
        docker_client.images.remove(image, force=True)


def test_container_config_requests_exactly_the_assigned_gpus(tmp_path: Path) -> None:
    spec = docker_spec(
        tmp_path, "pytorch/pytorch:2.4", ["python", "train.py"], gpu_indices=(1, 3),
        memory_limit_mb=2048, cpu_limit=4,
    )  # fmt: skip

    config = container_config(spec, agent_id="a1", user="1000:1000", shm_size_mb=512, pids_limit=99)

    [request] = config["device_requests"]
    assert request["Driver"] == "nvidia"
    assert request["DeviceIDs"] == ["1", "3"]
    assert request["Capabilities"] == [["gpu"]]
    assert config["mem_limit"] == config["memswap_limit"] == "2048m"
    assert config["nano_cpus"] == 4_000_000_000
    assert config["volumes"] == {str(tmp_path.resolve()): {"bind": "/workspace", "mode": "rw"}}
    assert config["network_mode"] == "none"
    assert config["privileged"] is False
    assert config["cap_drop"] == ["ALL"]
    assert config["read_only"] is True
    assert config["tmpfs"] == {"/tmp": "rw,nosuid,nodev,size=1024m,mode=1777"}
    assert config["labels"] == {"dante.job_id": "job-1", "dante.attempt": "1", "dante.agent": "a1"}
    assert "device_requests" not in container_config(
        docker_spec(tmp_path, "x", [], gpu_indices=(1,), request_gpus=False),
        agent_id="a1", user="0:0", shm_size_mb=1, pids_limit=1,
    )  # fmt: skip
