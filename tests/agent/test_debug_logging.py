"""LOG_LEVEL=debug: `dante up` and `dante agent run`, as real processes, log their decisions
(placements and queue reasons, charges, heartbeats, instructions, phases); at the default
level they do not."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from dante.client.connect import connect
from dante.client.credentials import Credential
from tests.agent.agent_proc import PASSWORDS, AgentProcess, Platform
from tests.agent.daemon_helpers import SIMULATE, Renter

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

GPUS = int(SIMULATE.split("x")[0])


def records(output: str) -> list[dict[str, Any]]:
    """The JSON log lines of a process's output (it is not a terminal)."""
    found = []
    for line in output.splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found


def _appended(output: str, job_id: str) -> set[str]:
    """The kinds of event the platform logged appending for `job_id`."""
    return {
        r["event_type"]
        for r in records(output)
        if r.get("event") == "decision.appended" and r.get("job_id") == job_id
    }


async def test_log_level_debug_shows_the_platforms_and_the_agents_decisions(
    tmp_path: Path,
) -> None:
    up = Platform(tmp_path / "platform")
    up.env["LOG_LEVEL"] = "debug"
    up.start().open_accounts()
    agent = AgentProcess(up.url, tmp_path / "work", env={"LOG_LEVEL": "debug"})
    quiet = AgentProcess(up.url, tmp_path / "quiet")
    nc = await connect(
        up.url, name="test", credential=Credential(username="alice", secret=PASSWORDS["alice"])
    )
    try:
        agent.start()
        renter = Renter(nc)
        await renter.deposit(100)
        # Two jobs for every GPU there is: the second waits, and the platform says why.
        job_id = await renter.submit("import time\ntime.sleep(2)\n", gpu_count=GPUS)
        waiting = await renter.submit("print('next')\n", gpu_count=GPUS)
        assert up.reader is not None and agent.reader is not None
        # Until the platform has logged the job's charge and its end (in either of
        # `dante up`'s processes): a bare string could come from another line first.
        deadline = time.monotonic() + 60
        while not {"FundsCharged", "JobCompleted"} <= _appended(up.reader.text, job_id):
            assert time.monotonic() < deadline, _appended(up.reader.text, job_id)
            await anyio.sleep(0.2)
        agent.reader.wait_for('"reported"', 60)
        quiet.start()
    finally:
        await nc.close()
        agent.stop()
        quiet.stop()
        up.stop()

    platform = records(up.reader.text)
    appended = [r for r in platform if r.get("event") == "decision.appended"]
    queued = [r["summary"] for r in appended if r["job_id"] == waiting and "queued" in r["summary"]]
    assert queued and "no_capacity" in queued[0], queued  # the placement reason
    placed = [r for r in appended if r.get("job_id") == job_id]
    kinds = [r["event_type"] for r in placed]
    assert any("assigned to" in r["summary"] for r in placed), kinds
    # The charge for it, and each state change, by the handler or command that made it.
    assert "FundsCharged" in kinds and "JobStarted" in kinds and "JobCompleted" in kinds, kinds
    assert any(r.get("event") == "liveness.heartbeat" for r in platform)
    assert all(r.get("level") for r in platform)

    logged = records(agent.output)
    assert any(r.get("event") == "heartbeat sent" for r in logged)
    received = [r for r in logged if r.get("event") == "instruction received"]
    assert [(r["kind"], r["job_id"]) for r in received][:1] == [("Assignment", job_id)]
    phases = [r["phase"] for r in logged if r.get("event") == "attempt phase"]
    assert phases[:3] == ["accepted", "inputs", "starting"], phases

    # The same agent at the default level logs none of that.
    assert not [
        r
        for r in records(quiet.output)
        if r.get("level") == "debug" or r.get("event") == "heartbeat sent"
    ]
