"""`dante agent run` as a real process against `dante up` as a real process: a renter's job
runs and is paid for; the agent killed mid-job and restarted; SIGTERM with a short drain;
the platform going away and coming back mid-job; a Docker job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from dante.agent.daemon import JOURNAL_FILE
from dante.agent.executors.sandbox import landlock_abi
from dante.agent.journal import Journal
from dante.client import transfer
from dante.client.commands import Client
from dante.client.connect import connect
from dante.client.credentials import Credential, platform_credential
from dante.events.subjects import HEARTBEAT_BUCKET, heartbeat_key
from dante.schemas import commands as cmd
from dante.schemas import events as ev
from dante.schemas.values import DockerPayload
from tests.agent.agent_proc import PASSWORDS, REPO, AgentProcess, Platform
from tests.agent.daemon_helpers import (
    Renter,
    check_usage,
    events_of,
    history,
    settled,
    usage_by_attempt,
    wait_for,
)
from tests.agent.runs import PROBE, verdicts
from tests.factories import SOLANA

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    up = Platform(tmp_path / "platform").start().open_accounts()
    try:
        yield up
    finally:
        up.stop()


async def login(platform: Platform, credential: Credential) -> NATS:
    return await connect(platform.url, name="test", credential=credential, forever=True)


@pytest.fixture
async def nc(platform: Platform) -> AsyncIterator[NATS]:
    """The platform's own view (its service user): the log, the heartbeat bucket."""
    client = await login(platform, platform_credential(platform.platform_password))
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def renter(platform: Platform) -> AsyncIterator[Renter]:
    client = await login(platform, Credential(username="alice", secret=PASSWORDS["alice"]))
    try:
        yield Renter(client)
    finally:
        await client.close()


def provider_id(agent: AgentProcess) -> str:
    return str(json.loads((agent.work_dir / "provider.json").read_text())["provider_id"])


async def heartbeat_gone(nc: NATS, agent: AgentProcess) -> bool:
    kv = await nc.jetstream().key_value(HEARTBEAT_BUCKET)
    try:
        await kv.get(heartbeat_key("bob", provider_id(agent)))
    except NotFoundError:
        return True
    return False


async def test_a_renters_job_runs_on_the_agent_and_is_paid_for(
    platform: Platform, nc: NATS, renter: Renter, tmp_path: Path
) -> None:
    agent = AgentProcess(platform.url, tmp_path / "work").start()
    await renter.deposit(100)
    job_id = await renter.submit(
        "import os, time\n"
        "for n in range(5):\n"
        "    print('step', n, flush=True)\n"
        "    time.sleep(0.6)\n"
        "open(os.environ['DANTE_OUTPUT_DIR'] + '/result.txt', 'w').write('done')\n"
    )
    rss = 0.0
    with anyio.fail_after(60):
        while not (await wait_for(nc, lambda _: True)).job(job_id).ended:
            rss = max(rss, agent.rss_mb())
            await anyio.sleep(0.2)
    world = await wait_for(nc, settled(job_id), what="billing")
    job = world.job(job_id)
    assert (job.status, job.exit_code) == ("completed", 0), agent.output
    assert rss < 100, f"the agent used {rss:.0f} MB while running a job"

    # Usage was metered, charged, and paid out (through the public queries too).
    records = await history(nc)
    charged = check_usage(records, job_id, job.price)
    assert charged > 0 and list(usage_by_attempt(records, job_id)) == [1]
    alice = await renter.client.send(cmd.GetBalance())
    owner = await login(platform, Credential(username="bob", secret=PASSWORDS["bob"]))
    try:
        bob = await Client(owner, "renter", "bob").send(cmd.GetBalance())
    finally:
        await owner.close()
    assert alice["total_udgpu"] == 100_000_000 - charged
    assert 0 < bob["total_udgpu"] < charged  # the provider's share, less the fee

    page = await transfer.read_logs(renter.client, job_id)
    assert [line.text for line in page.lines] == [f"step {n}" for n in range(5)]
    dest = tmp_path / "results.tar.gz"
    await transfer.download_results(renter.client, job_id, dest)
    with tarfile.open(dest) as archive:
        member = archive.extractfile("result.txt")
        assert member is not None and member.read() == b"done"

    assert agent.stop() == 0
    assert await heartbeat_gone(nc, agent)


async def test_killed_mid_job_and_restarted_the_attempt_is_not_run_again(
    platform: Platform, nc: NATS, renter: Renter, tmp_path: Path
) -> None:
    (tmp_path / "witness").mkdir()  # exists before the job: the sandbox lets it write there
    runs = tmp_path / "witness" / "runs.txt"
    work = tmp_path / "work"
    agent = AgentProcess(platform.url, work).start()
    await renter.deposit(100)
    job_id = await renter.submit(
        "import os, time\n"
        "out = os.environ['DANTE_OUTPUT_DIR']\n"
        f"open({str(runs)!r}, 'a').write('start ' + out + '\\n')\n"
        "time.sleep(4)\n"  # quiet: a killed agent's orphan would live on
        f"open({str(runs)!r}, 'a').write('done ' + out + '\\n')\n"
    )
    await wait_for(nc, lambda w: w.job(job_id).status == "running", what="the job to start")
    await anyio.sleep(2.2)  # a tick or two
    agent.kill()

    again = AgentProcess(platform.url, work).start()
    world = await wait_for(nc, settled(job_id), what="the job to run again and complete")
    job = world.job(job_id)
    assert (job.status, job.attempt) == ("completed", 2), again.output
    await anyio.sleep(3)  # long enough for the first run's sleep to have ended
    lines = runs.read_text().splitlines()
    first = str(work / "jobs" / job_id / "1" / "out")
    second = str(work / "jobs" / job_id / "2" / "out")
    assert lines.count(f"start {first}") == 1  # never started again
    assert f"done {first}" not in lines  # the orphan was killed at the restart
    assert "killed a job left running" in again.output
    assert lines.count(f"start {second}") == 1 and lines.count(f"done {second}") == 1

    records = await history(nc)
    (requeued,) = events_of(records, ev.JobRequeued, job_id)
    assert "stopped unexpectedly" in requeued.reason
    check_usage(records, job_id, job.price)  # each tick counted once, charged exactly
    assert again.stop() == 0
    # Every tick the killed agent journaled reached the platform, once.
    journal = Journal(work / JOURNAL_FILE)
    try:
        journaled = journal.ticks((job_id, 1))
    finally:
        journal.close()
    assert journaled and {state for _, state in journaled} == {"sent"}
    assert usage_by_attempt(records, job_id)[1] == [tick.seq for tick, _ in journaled]


async def test_sigterm_lets_short_jobs_finish_and_gives_long_ones_back(
    platform: Platform, nc: NATS, renter: Renter, tmp_path: Path
) -> None:
    agent = AgentProcess(
        platform.url, tmp_path / "work", "--drain-timeout", "4", "--stop-grace", "2"
    ).start()
    await renter.deposit(100)
    short = await renter.submit("import time; time.sleep(2); print('made it', flush=True)")
    long = await renter.submit("import time; time.sleep(600)")
    await wait_for(
        nc,
        lambda w: w.job(short).status == "running" and w.job(long).status == "running",
        what="both jobs to start",
    )
    with anyio.fail_after(60):
        code = await anyio.to_thread.run_sync(agent.stop)
    assert code == 0, agent.output
    world = await wait_for(
        nc, lambda w: w.job(short).ended and w.job(long).requeues == 1, what="the outcomes"
    )
    assert world.job(short).status == "completed"
    (requeued,) = events_of(await history(nc), ev.JobRequeued, long)
    assert requeued.reason == "the provider's agent shut down"
    # Its offers were withdrawn on the way out: the job waits for another provider.
    assert world.job(long).status == "queued"
    assert await heartbeat_gone(nc, agent)


async def test_the_platform_going_away_mid_job_loses_nothing(
    platform: Platform, nc: NATS, renter: Renter, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    agent = AgentProcess(platform.url, work).start()
    await renter.deposit(100)
    job_id = await renter.submit(
        "import time\nfor n in range(16):\n    print('line', n, flush=True)\n    time.sleep(0.5)\n"
    )
    await wait_for(nc, lambda w: w.job(job_id).status == "running", what="the job to start")
    await anyio.sleep(1.5)
    assert platform.stop() == 0
    await anyio.sleep(3)  # the job runs on; its ticks and output wait in the agent
    platform.start()  # the same data and port: everyone reconnects
    world = await wait_for(nc, settled(job_id), what="the job to complete")
    job = world.job(job_id)
    assert (job.status, job.attempt) == ("completed", 1), agent.output
    records = await history(nc)
    check_usage(records, job_id, job.price)
    ticks = usage_by_attempt(records, job_id)[1]
    assert ticks == list(range(1, len(ticks) + 1))  # none lost
    page = await transfer.read_logs(renter.client, job_id, limit=100)
    assert [line.text for line in page.lines] == [f"line {n}" for n in range(16)]
    assert agent.stop() == 0


@pytest.mark.docker
async def test_a_docker_job_runs_in_a_container(
    platform: Platform, nc: NATS, renter: Renter, tmp_path: Path, busybox_image: str
) -> None:
    agent = AgentProcess(platform.url, tmp_path / "work", "--executor", "docker").start()
    await renter.deposit(100)
    job_id = await renter.submit(
        DockerPayload(
            image=busybox_image,
            command=["sh", "-c", "echo inside; sleep 1.5; echo 42 > /workspace/out/answer.txt"],
        )
    )
    world = await wait_for(nc, settled(job_id), what="the container job")
    job = world.job(job_id)
    assert (job.status, job.exit_code) == ("completed", 0), agent.output
    page = await transfer.read_logs(renter.client, job_id)
    assert [line.text for line in page.lines] == ["inside"]
    dest = tmp_path / "results.tar.gz"
    await transfer.download_results(renter.client, job_id, dest)
    with tarfile.open(dest) as archive:
        member = archive.extractfile("answer.txt")
        assert member is not None and member.read() == b"42\n"
    assert agent.stop(signal.SIGINT) == 0


async def test_a_wrong_password_is_refused_at_once(platform: Platform, tmp_path: Path) -> None:
    agent = AgentProcess(platform.url, tmp_path / "work", env={"DANTE_PASSWORD": "not-it-at-all"})
    with pytest.raises(AssertionError, match="refused 'bob/prv-"):
        agent.start(timeout=30)
    assert agent.stop() == 1
    # Said in one line, not as a traceback of the task group it was raised in.
    assert "dante agent run: the platform at" in agent.output
    assert "Traceback" not in agent.output


ESCAPE_ATTEMPTS = """
attempt("credential-file", lambda: open(CONFIG + "/dante/credentials.json").read())
attempt("dotenv", lambda: open(CWD + "/.env").read())
attempt("agent-environ", lambda: open("/proc/%d/environ" % os.getppid(), "rb").read())
attempt("journal", lambda: open(WORK + "/journal.sqlite3", "rb").read())
attempt("write-up", lambda: open("../escape.txt", "w").write("x"))
print("env-leak", "ok" if "AWS_SECRET_ACCESS_KEY" in os.environ else "denied")
"""


@pytest.mark.skipif(landlock_abi() == 0, reason="this kernel has no Landlock to confine scripts")
async def test_a_script_job_cannot_read_the_agents_secrets_or_write_outside(
    platform: Platform, nc: NATS, renter: Renter, tmp_path: Path
) -> None:
    """Issue 9: the agent logged in with a stored token (its credential file), settings in a
    .env and a secret in its environment; the renter's script tries to get at all of it."""
    login_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DANTE_")},
        "DANTE_USERNAME": "bob",
        "DANTE_PASSWORD": PASSWORDS["bob"],
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "PYTHONPATH": str(REPO),
    }
    subprocess.run(
        [sys.executable, "-m", "dante", "login", "--nats-url", platform.url],
        env=login_env, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    (tmp_path / ".env").write_text(f"SOLANA_WALLET_ADDRESS={SOLANA}\nPROVIDER_NAME=rig-1\n")
    agent = AgentProcess(
        platform.url, tmp_path / "work", env={"AWS_SECRET_ACCESS_KEY": "very-secret"}
    )
    del agent.env["DANTE_PASSWORD"]  # it logs in with the stored token
    del agent.env["SOLANA_WALLET_ADDRESS"]  # from .env
    agent.start()
    await renter.deposit(100)
    paths = f"CONFIG = {str(tmp_path / 'config')!r}\nCWD = {str(tmp_path)!r}\n"
    paths += f"WORK = {str(tmp_path / 'work')!r}\n"
    job_id = await renter.submit(PROBE + paths + ESCAPE_ATTEMPTS)

    world = await wait_for(nc, settled(job_id), what="the escaping job")
    assert (world.job(job_id).status, world.job(job_id).exit_code) == ("completed", 0)
    page = await transfer.read_logs(renter.client, job_id)
    assert verdicts([line.text for line in page.lines]) == {
        "credential-file": "denied",
        "dotenv": "denied",
        "agent-environ": "denied",
        "journal": "denied",
        "write-up": "denied",
        "env-leak": "denied",
    }, agent.output
    assert not list((tmp_path / "work").rglob("escape.txt"))
    assert agent.stop() == 0
