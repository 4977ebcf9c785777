"""Agent memory: peak RSS of `dante agent run` while it runs a job.

`dante up --demo` runs on its own nats-server (logins enforced) and starts the real agent
as a child process (`dante agent run --simulate 2xRTX 4090 --executor script`). The demo
renter submits a script job that runs for a while; the agent's resident memory is sampled
while the job runs, and its peak (VmHWM) read once the job has ended. `dante up`'s own peak
is reported beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from bench.platform import free_port
from bench.report import Report, children, rss_mb
from dante.client.commands import Client
from dante.client.connect import connect
from dante.client.credentials import Credential
from dante.schemas import commands as cmd
from dante.schemas.results import SubmitResult
from dante.schemas.values import JobRequirements, ScriptPayload
from dante.schemas.views import JobView

if TYPE_CHECKING:
    from bench.options import Options

#: The demo renter `dante up --demo` opens.
RENTER = Credential(username="demo-user", secret="demo-pass", role="renter")


def _agent_pid(up_pid: int) -> int | None:
    for pid in children(up_pid):
        with contextlib.suppress(OSError):
            if b"agent\x00run" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
    return None


async def run(options: Options) -> Report:
    seconds = options.seconds or (10.0 if options.quick else 30.0)
    report = Report("agent", params={"job_seconds": seconds, "gpus": "2 simulated"})
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        url = f"nats://127.0.0.1:{port}"
        env = {
            **os.environ,
            "XDG_CONFIG_HOME": str(Path(tmp) / "config"),
            "LOG_LEVEL": "warning",
        }
        log = (Path(tmp) / "up.log").open("wb")
        up = subprocess.Popen(  # noqa: ASYNC220 (a child for the whole bench, polled below)
            [sys.executable, "-m", "dante", "up", "--demo", "--data-dir", str(Path(tmp) / "d"),
             "--port", str(port), "--monitor-port", "-1"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        try:
            await _measure(report, up, url, Path(tmp) / "up.log", seconds)
        finally:
            up.send_signal(signal.SIGTERM)
            try:
                up.wait(timeout=60)
            except subprocess.TimeoutExpired:
                up.kill()
            log.close()
    return report


async def _measure(
    report: Report, up: subprocess.Popen[bytes], url: str, log: Path, seconds: float
) -> None:
    started = time.monotonic()
    while b"\nready" not in b"\n" + log.read_bytes():  # noqa: ASYNC240 (a small local file)
        if up.poll() is not None or time.monotonic() - started > 300:
            tail = log.read_text()[-3000:]  # noqa: ASYNC240
            raise RuntimeError("dante up --demo did not start:\n" + tail)
        await asyncio.sleep(0.2)
    agent = _agent_pid(up.pid)
    if agent is None:
        raise RuntimeError("no agent process under dante up --demo")
    report.add("agent RSS when idle", rss_mb(agent)[0], "MiB")
    nc = await connect(url, name="bench-agent", credential=RENTER)
    try:
        client = Client(nc, "renter", RENTER.username, timeout=30)
        script = (
            f"import time\nfor n in range({int(seconds)}):\n"
            "    print(n, flush=True)\n    time.sleep(1)\n"
        )
        submitted = await client.send(
            cmd.SubmitJob(
                command_id=uuid.uuid4().hex,
                requirements=JobRequirements(gpu_count=1),
                payload=ScriptPayload(script=script),
            ),
            SubmitResult,
        )
        samples = []
        deadline = time.monotonic() + seconds + 120
        state = ""
        while time.monotonic() < deadline:
            job = await client.send(cmd.GetJob(job_id=submitted.job_id), JobView)
            state = job.state
            if state == "running":
                samples.append(rss_mb(agent)[0])
            if state in ("completed", "failed", "cancelled", "stopped"):
                break
            await asyncio.sleep(0.5)
    finally:
        await nc.close()
    report.add("agent RSS while running a job, max of samples", max(samples, default=0), "MiB")
    report.add("agent peak RSS (VmHWM)", rss_mb(agent)[1], "MiB")
    report.add("dante up peak RSS", rss_mb(up.pid)[1], "MiB")
    report.notes.append(f"the job ended {state}; {len(samples)} samples while it ran")
