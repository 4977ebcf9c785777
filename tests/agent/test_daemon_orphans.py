"""After a crash: job processes a dead agent left are found and killed, and nothing else."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from dante.agent import orphans
from dante.agent.executors.script import ScriptExecutor
from dante.agent.executors.spec import RunSpec
from tests.agent.runs import Collected, script_spec


def sleeper(out_dir: Path | None, *, new_session: bool = True) -> subprocess.Popen[bytes]:
    env = {"PATH": os.environ["PATH"]}
    if out_dir is not None:
        env["DANTE_OUTPUT_DIR"] = str(out_dir)
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        env=env,
        start_new_session=new_session,
    )


def gone(process: subprocess.Popen[bytes]) -> bool:
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        return False
    return True


@pytest.fixture
def cleanup() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_journaled_group_is_killed_only_while_it_is_that_job(
    tmp_path: Path, cleanup: list[subprocess.Popen[bytes]]
) -> None:
    job = tmp_path / "jobs" / "job-1" / "1"
    ours = sleeper(job / "out")
    other = sleeper(tmp_path / "elsewhere" / "out")  # e.g. a reused pid
    bare = sleeper(None)
    cleanup.extend([ours, other, bare])
    time.sleep(0.3)  # let each exec, so /proc shows its own environment

    assert not orphans.kill_job_group(other.pid, job)
    assert not orphans.kill_job_group(bare.pid, job)
    assert orphans.kill_job_group(ours.pid, job)
    assert gone(ours)
    assert other.poll() is None and bare.poll() is None


def test_strays_under_the_jobs_folder_are_killed(
    tmp_path: Path, cleanup: list[subprocess.Popen[bytes]]
) -> None:
    jobs = tmp_path / "jobs"
    escaped = sleeper(jobs / "job-2" / "1" / "out")  # left its group with setsid
    unrelated = sleeper(tmp_path / "other-agent" / "jobs" / "job-2" / "1" / "out")
    cleanup.extend([escaped, unrelated])
    time.sleep(0.3)

    assert orphans.kill_strays(jobs) == [escaped.pid]
    assert gone(escaped)
    assert unrelated.poll() is None


@pytest.mark.anyio
async def test_the_script_executor_reports_the_process_group(tmp_path: Path) -> None:
    seen: list[tuple[str, int]] = []

    def spawned(spec: RunSpec, pgid: int) -> None:
        seen.append((spec.job_id, pgid))

    collected = Collected()
    spec = script_spec(tmp_path, "echo $$")
    result = await ScriptExecutor(on_spawn=spawned).run(
        spec, on_output=collected, stop=anyio.Event()
    )
    assert result.exit_code == 0
    ((job_id, pgid),) = seen
    assert job_id == "job-1"
    assert collected.texts() == [str(pgid)]  # bash's own pid leads its group
