"""The script executor, with real bash and python3 processes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import anyio
import pytest

from dante.agent.executors.script import ScriptExecutor
from dante.agent.executors.spec import RunResult, RunSpec
from tests.agent.runs import Collected, docker_spec, script_spec

pytestmark = pytest.mark.anyio


async def run(spec: RunSpec, stop: anyio.Event | None = None) -> tuple[RunResult, Collected]:
    collected = Collected()
    result = await ScriptExecutor().run(
        spec,
        on_output=collected,
        stop=stop or anyio.Event(),
        on_started=collected.on_started,
    )
    return result, collected


async def test_output_of_both_streams_and_the_exit_code(tmp_path: Path) -> None:
    script = "echo one; echo two >&2; printf 'no newline at end'; exit 7"

    result, out = await run(script_spec(tmp_path, script))

    assert result.exit_code == 7
    assert result.error == ""
    assert not result.timed_out
    assert not result.stopped
    assert not result.succeeded
    assert out.texts("stdout") == ["one", "no newline at end"]
    assert out.texts("stderr") == ["two"]
    assert result.started_at is not None
    assert result.started_at <= out.lines[0].at <= result.ended_at
    assert all(line.at.utcoffset() is not None for line in out.lines)
    assert len(out.started) == 1


async def test_python_script_with_arguments_succeeds(tmp_path: Path) -> None:
    script = "import sys\nprint('args:', sys.argv[1:])\n"

    result, out = await run(script_spec(tmp_path, script, interpreter="python3", args=["a", "b c"]))

    assert result.succeeded
    assert out.texts() == ["args: ['a', 'b c']"]
    assert (tmp_path / "job.py").read_text() == script


async def test_output_arrives_while_the_script_still_runs(tmp_path: Path) -> None:
    script = "import time\nfor i in range(4):\n    print('tick', i)\n    time.sleep(0.5)\n"

    result, out = await run(script_spec(tmp_path, script, interpreter="python3"))
    finished = time.monotonic()

    assert result.exit_code == 0
    assert out.texts() == ["tick 0", "tick 1", "tick 2", "tick 3"]
    # The first line was delivered well before the script ended (it ran ~2 s).
    assert len(out.batches) >= 3
    assert finished - out.arrivals[0] > 1.0


async def test_many_lines_come_in_batches_of_at_most_100(tmp_path: Path) -> None:
    result, out = await run(script_spec(tmp_path, "for i in $(seq 1 1050); do echo line $i; done"))

    assert result.exit_code == 0
    assert out.texts() == [f"line {i}" for i in range(1, 1051)]
    assert max(len(batch) for batch in out.batches) <= 100


async def test_time_limit_kills_the_script(tmp_path: Path) -> None:
    started = time.monotonic()

    result, out = await run(
        script_spec(tmp_path, "echo started; sleep 30", max_duration_s=0.5, stop_grace_s=1)
    )

    assert result.timed_out
    assert not result.stopped
    assert result.exit_code == 128 + 15  # SIGTERM ends sleep, and bash with it
    assert out.texts() == ["started"]
    assert time.monotonic() - started < 10


async def test_stop_lets_a_trap_run_then_the_script_exits(tmp_path: Path) -> None:
    script = "trap 'echo cleaning up; exit 3' TERM\necho ready\nwhile true; do sleep 0.1; done\n"
    stop = anyio.Event()
    spec = script_spec(tmp_path, script, stop_grace_s=5)

    async with anyio.create_task_group() as group:
        results: list[RunResult] = []
        collected = Collected()

        async def go() -> None:
            results.append(await ScriptExecutor().run(spec, on_output=collected, stop=stop))

        group.start_soon(go)
        await _wait_for_line(collected, "ready")
        stopped_at = time.monotonic()
        stop.set()
    ended = time.monotonic() - stopped_at

    [result] = results
    assert result.stopped
    assert result.exit_code == 3
    # (bash also reports the sleep it lost on stderr: "Terminated")
    assert collected.texts("stdout") == ["ready", "cleaning up"]
    assert ended < 2


async def test_stop_kills_a_script_that_ignores_sigterm_after_the_grace(tmp_path: Path) -> None:
    script = "trap '' TERM\necho ready\nwhile true; do sleep 0.1; done\n"
    stop = anyio.Event()
    collected = Collected()
    results: list[RunResult] = []
    spec = script_spec(tmp_path, script, stop_grace_s=0.5)

    async with anyio.create_task_group() as group:

        async def go() -> None:
            results.append(await ScriptExecutor().run(spec, on_output=collected, stop=stop))

        group.start_soon(go)
        await _wait_for_line(collected, "ready")
        stopped_at = time.monotonic()
        stop.set()
    ended = time.monotonic() - stopped_at

    [result] = results
    assert result.stopped
    assert result.exit_code == 128 + 9
    assert ended < 2


async def test_children_of_the_script_are_killed_with_it(tmp_path: Path) -> None:
    # The child outlives the script unless the whole process group is killed.
    script = "sleep 300 &\necho $! > child.pid\necho spawned\n"

    result, _ = await run(script_spec(tmp_path, script))

    assert result.exit_code == 0
    child = int((tmp_path / "child.pid").read_text())
    await _wait_until_gone(child)


async def test_children_are_killed_when_the_script_is_stopped(tmp_path: Path) -> None:
    script = "sleep 300 &\necho $! > child.pid\necho ready\nwait\n"
    stop = anyio.Event()
    collected = Collected()

    async with anyio.create_task_group() as group:

        async def go() -> None:
            await ScriptExecutor().run(
                script_spec(tmp_path, script, stop_grace_s=1), on_output=collected, stop=stop
            )

        group.start_soon(go)
        await _wait_for_line(collected, "ready")
        stop.set()

    await _wait_until_gone(int((tmp_path / "child.pid").read_text()))


async def test_the_agent_environment_never_reaches_the_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DANTE_AGENT_SECRET", "s3cr3t-token")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "also-secret")
    script = "import os, json\nprint(json.dumps(dict(os.environ), sort_keys=True))\n"

    result, out = await run(
        script_spec(
            tmp_path,
            script,
            interpreter="python3",
            env={"LEARNING_RATE": "0.001", "PATH": "/usr/bin:/bin"},
            gpu_indices=(0, 2),
        )
    )

    assert result.exit_code == 0
    import json

    env = json.loads(out.texts()[0])
    assert "s3cr3t-token" not in out.texts()[0]
    assert "also-secret" not in out.texts()[0]
    assert env["LEARNING_RATE"] == "0.001"
    assert env["PATH"] == "/usr/bin:/bin"  # the job may choose its PATH
    assert env["HOME"] == str(tmp_path)
    assert env["CUDA_VISIBLE_DEVICES"] == "0,2"
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert env["DANTE_OUTPUT_DIR"] == str(tmp_path / "out")
    assert env["TMPDIR"] == str(tmp_path / ".tmp")
    allowed = {
        "PATH", "HOME", "LANG", "PYTHONUNBUFFERED", "LEARNING_RATE", "CUDA_VISIBLE_DEVICES",
        "CUDA_DEVICE_ORDER", "DANTE_OUTPUT_DIR", "TMPDIR", "DANTE_JOB_ID", "DANTE_ATTEMPT",
        "DANTE_GPU_COUNT", "DANTE_STOP_FILE",
    }  # fmt: skip
    # The interpreter itself may add a variable or two (LC_CTYPE); nothing from the agent.
    assert set(env) - allowed <= {"LC_CTYPE"}


async def test_the_job_knows_its_id_attempt_gpus_and_stop_file(tmp_path: Path) -> None:
    script = 'echo "$DANTE_JOB_ID $DANTE_ATTEMPT $DANTE_GPU_COUNT $DANTE_OUTPUT_DIR"'
    script += ' "$DANTE_STOP_FILE"'
    spec = script_spec(
        tmp_path, script, job_id="j-42", attempt=2, gpu_indices=(0, 3),
        env={"DANTE_JOB_ID": "forged", "DANTE_ATTEMPT": "9"},
    )  # fmt: skip

    result, out = await run(spec)

    assert result.exit_code == 0, out.texts()
    assert out.texts() == [f"j-42 2 2 {tmp_path}/out {tmp_path}/stop-reason"]


async def test_the_time_limit_is_explained_before_the_sigterm(tmp_path: Path) -> None:
    script = (
        "trap 'cat \"$DANTE_STOP_FILE\"; exit 0' TERM\necho ready\nwhile true; do sleep 0.1; done\n"
    )
    result, out = await run(script_spec(tmp_path, script, max_duration_s=1, stop_grace_s=5))

    assert result.timed_out and result.exit_code == 0, out.texts()
    assert out.texts("stdout") == ["ready", "max_duration: the job reached its time limit of 1 s"]


async def test_no_gpus_means_an_empty_cuda_visible_devices(tmp_path: Path) -> None:
    result, out = await run(script_spec(tmp_path, 'echo "[${CUDA_VISIBLE_DEVICES-unset}]"'))

    assert result.exit_code == 0
    assert out.texts() == ["[]"]


async def test_a_job_cannot_widen_its_gpus(tmp_path: Path) -> None:
    spec = script_spec(
        tmp_path, "echo $CUDA_VISIBLE_DEVICES", env={"CUDA_VISIBLE_DEVICES": "0,1,2,3"},
        gpu_indices=(1,),
    )  # fmt: skip

    _, out = await run(spec)

    assert out.texts() == ["1"]


async def test_memory_limit_stops_a_large_allocation(tmp_path: Path) -> None:
    script = (
        "small = bytearray(16 * 1024 * 1024)\nprint('16 MiB ok', flush=True)\n"
        "big = bytearray(1024 * 1024 * 1024)\nprint('1 GiB ok')\n"
    )

    limited, out = await run(
        script_spec(tmp_path / "a", script, interpreter="python3", memory_limit_mb=256)
    )
    unlimited, _ = await run(script_spec(tmp_path / "b", script, interpreter="python3"))

    assert limited.exit_code == 1
    assert out.texts("stdout") == ["16 MiB ok"]
    assert out.texts("stderr")[-1] == "MemoryError"
    assert unlimited.exit_code == 0


async def test_runs_in_its_work_folder_with_an_out_folder(tmp_path: Path) -> None:
    work = tmp_path / "jobs" / "job-1"
    script = 'pwd\necho result > "$DANTE_OUTPUT_DIR/answer.txt"\n'

    result, out = await run(script_spec(work, script))

    assert result.exit_code == 0
    assert out.texts() == [str(work)]
    assert (work / "out" / "answer.txt").read_text() == "result\n"


async def test_missing_interpreter_is_an_error_not_a_crash(tmp_path: Path) -> None:
    executor = ScriptExecutor(search_path=str(tmp_path / "empty"))

    result = await executor.run(
        script_spec(tmp_path, "echo hi", interpreter="python3"),
        on_output=Collected(),
        stop=anyio.Event(),
    )

    assert result.exit_code is None
    assert result.error == "python3 is not installed on this provider"
    assert result.started_at is None


async def test_a_failing_output_sink_does_not_stop_the_job(tmp_path: Path) -> None:
    async def broken(_: object) -> None:
        raise ConnectionError("NATS is down")

    result = await ScriptExecutor().run(
        script_spec(tmp_path, "echo a; echo b; echo done > out/marker"),
        on_output=broken,
        stop=anyio.Event(),
    )

    assert result.exit_code == 0
    assert (tmp_path / "out" / "marker").exists()


async def test_cancelling_the_caller_kills_the_script(tmp_path: Path) -> None:
    script = "sleep 300 &\necho $! > child.pid\necho ready\nwait\n"
    collected = Collected()

    with anyio.move_on_after(20):
        async with anyio.create_task_group() as group:

            async def go() -> None:
                await ScriptExecutor().run(
                    script_spec(tmp_path, script), on_output=collected, stop=anyio.Event()
                )

            group.start_soon(go)
            await _wait_for_line(collected, "ready")
            group.cancel_scope.cancel()

    await _wait_until_gone(int((tmp_path / "child.pid").read_text()))


async def test_a_docker_payload_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="cannot run a DockerPayload"):
        await ScriptExecutor().run(
            docker_spec(tmp_path, "busybox", ["true"]), on_output=Collected(), stop=anyio.Event()
        )


async def _wait_for_line(collected: Collected, text: str) -> None:
    with anyio.fail_after(10):
        while text not in collected.texts():
            await anyio.sleep(0.02)


async def _wait_until_gone(pid: int) -> None:
    with anyio.fail_after(5):
        while _alive(pid):
            await anyio.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (killed, not yet reaped by its parent) is gone for our purposes.
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


async def test_a_memory_limit_too_small_to_start_is_an_error(tmp_path: Path) -> None:
    result, _ = await run(
        script_spec(tmp_path, "print('hi')", interpreter="python3", memory_limit_mb=1)
    )

    # Either exec itself fails (an error, never started) or the interpreter dies loading.
    if result.error:
        assert result.error.startswith("could not start python3: ")
        assert result.exit_code is None
    else:
        assert result.exit_code not in (None, 0)
