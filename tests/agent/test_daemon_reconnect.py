"""Issue 15: the platform's nats-server restarts (same port, same store) while an agent runs
a job. The agent comes back by itself, though nats-py gave up on its connection; the job
that finished while the server was down is reported and paid, not run again. And an agent
stopped while its connection is dead exits within its drain timeout, its report kept in
the journal for the next start.

Real processes throughout: a nats-server started with the installation's secrets (the way
an operator runs one for `dante up --nats-url`), `dante up` on it, `dante agent run`."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import nats.errors
import pytest
from nats.aio.client import Client as NATS

from dante.agent.daemon import JOURNAL_FILE
from dante.agent.journal import Journal
from dante.client.commands import Client
from dante.client.connect import ConnectFailed, connect
from dante.client.credentials import Credential, platform_credential
from dante.events.natsd import NatsServer, default_config
from dante.schemas import commands as cmd
from dante.schemas import events as ev
from dante.services.auth.installation import InstallationSecrets
from tests.agent.agent_proc import PASSWORDS, AgentProcess, Platform
from tests.agent.daemon_helpers import (
    Renter,
    check_usage,
    events_of,
    history,
    settled,
    usage_by_attempt,
    wait_for,
)
from tests.cli.platform_proc import dante

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

#: A job that runs a few seconds, writing a result; it ends while the server is down.
JOB = (
    "import os, time\n"
    "for n in range(6):\n"
    "    print('step', n, flush=True)\n"
    "    time.sleep(0.5)\n"
    "open(os.environ['DANTE_OUTPUT_DIR'] + '/result.txt', 'w').write('done')\n"
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    """The platform's nats-server, on a port it keeps when started again."""
    data_dir = tmp_path / "platform"
    data_dir.mkdir(mode=0o700)
    installation = InstallationSecrets.load_or_create(data_dir)
    nats = NatsServer(
        store_dir=tmp_path / "nats",
        config=default_config(),
        monitor_port=-1,
        env=installation.server_env(),
    ).start()
    nats.port = nats.client_port or -1
    try:
        yield nats
    finally:
        nats.stop()


@pytest.fixture
def platform(tmp_path: Path, server: NatsServer) -> Iterator[Platform]:
    up = Platform(tmp_path / "platform", nats_url=server.url).start().open_accounts()
    try:
        yield up
    finally:
        assert up.process is not None
        if up.process.poll() is None:
            up.process.send_signal(signal.SIGCONT)  # were it still paused
        up.stop()


async def login(url: str, credential: Credential, timeout: float = 30) -> NATS:
    """A connection, once the platform lets it in (it may be restarting)."""
    with anyio.fail_after(timeout):
        while True:
            try:
                return await connect(url, name="test", credential=credential, forever=True)
            except ConnectFailed:
                await anyio.sleep(0.5)


@pytest.fixture
async def nc(platform: Platform) -> AsyncIterator[NATS]:
    """The platform's own view (its service user, which the callout does not decide: it
    reconnects by itself): the log."""
    client = await login(platform.url, platform_credential(platform.platform_password))
    try:
        yield client
    finally:
        await client.close()


async def readable(nc: NATS, timeout: float = 30) -> None:
    """Once the log can be read again (JetStream takes a moment after a server restart)."""
    with anyio.fail_after(timeout):
        while True:
            try:
                await history(nc)
            except (nats.errors.Error, TimeoutError):
                await anyio.sleep(0.5)
            else:
                return


def provider_id(agent: AgentProcess) -> str:
    return str(json.loads((agent.work_dir / "provider.json").read_text())["provider_id"])


async def balance(url: str, name: str) -> int:
    """What `name`'s wallet holds, asked on a connection of its own (made after the
    restart: nats-py gives up on one whose reconnect the platform refused)."""
    owner = await login(url, Credential(username=name, secret=PASSWORDS[name]))
    try:
        result = await Client(owner, "renter", name).send(cmd.GetBalance())
    finally:
        await owner.close()
    total: int = result["total_udgpu"]
    return total


async def test_the_server_restarts_and_the_agent_comes_back_and_its_finished_job_is_paid(
    server: NatsServer, platform: Platform, nc: NATS, tmp_path: Path
) -> None:
    assert platform.process is not None and platform.reader is not None
    renter_nc = await login(platform.url, Credential(username="alice", secret=PASSWORDS["alice"]))
    try:
        renter = Renter(renter_nc)
        await renter.deposit(100)
        agent = AgentProcess(platform.url, tmp_path / "work").start()
        assert agent.reader is not None
        job_id = await renter.submit(JOB)
        await wait_for(nc, lambda w: w.job(job_id).status == "running", what="the job to start")
    finally:
        await renter_nc.close()
    await anyio.sleep(1.2)  # a tick or so reaches the platform

    # The server goes, and comes back before the platform's login service does (paused
    # here: what a platform that is still restarting looks like to an agent logging in).
    platform.process.send_signal(signal.SIGSTOP)
    try:
        server.kill()
        mark = len(agent.reader.lines)
        agent.reader.wait_for('"job ended"', 30, mark)  # finished while the server is down
        server.start()
        # nats-py's own reconnect is refused (the callout goes unanswered) and it gives up.
        agent.reader.wait_for("closed for good", 30, mark)
    finally:
        platform.process.send_signal(signal.SIGCONT)
    agent.reader.wait_for('"reconnected to the platform"', 60, mark)

    await readable(nc)
    world = await wait_for(nc, settled(job_id), timeout=60, what="the job to be paid")
    job = world.job(job_id)
    assert (job.status, job.attempt, job.exit_code) == ("completed", 1, 0), agent.output
    records = await history(nc)
    assert events_of(records, ev.JobRequeued, job_id) == []
    prv = provider_id(agent)
    assert not [
        r.event
        for r in records
        if isinstance(r.event, ev.ProviderWentOffline) and r.event.provider_id == prv
    ]
    # Every tick once, including those metered while the server was away; charged once.
    charged = check_usage(records, job_id, job.price)
    assert charged > 0 and list(usage_by_attempt(records, job_id)) == [1]
    (finished,) = events_of(records, ev.JobCompleted, job_id)
    assert finished.results is not None  # its results too, uploaded on the new connection
    assert await balance(platform.url, "alice") == 100_000_000 - charged

    # It goes on serving over the new connection: instructions, heartbeats.
    renter_nc = await login(platform.url, Credential(username="alice", secret=PASSWORDS["alice"]))
    try:
        again = await Renter(renter_nc).submit("print('after the restart')")
    finally:
        await renter_nc.close()
    world = await wait_for(nc, settled(again), what="a job after the restart")
    assert world.job(again).status == "completed"
    assert agent.stop() == 0, agent.output


async def test_sigterm_on_a_dead_connection_exits_within_the_drain_timeout(
    server: NatsServer, platform: Platform, nc: NATS, tmp_path: Path
) -> None:
    drain = 3.0
    work = tmp_path / "work"
    renter_nc = await login(platform.url, Credential(username="alice", secret=PASSWORDS["alice"]))
    try:
        renter = Renter(renter_nc)
        await renter.deposit(100)
        agent = AgentProcess(platform.url, work, "--drain-timeout", str(drain)).start()
        assert agent.reader is not None
        job_id = await renter.submit("import time; time.sleep(2); print('made it', flush=True)")
        await wait_for(nc, lambda w: w.job(job_id).status == "running", what="the job to start")
    finally:
        await renter_nc.close()

    server.kill()  # the connection is dead from here on
    mark = len(agent.reader.lines)
    agent.reader.wait_for('"job ended"', 30, mark)  # its finish cannot be reported
    started = time.monotonic()
    assert agent.stop(timeout=60) == 0, agent.output
    took = time.monotonic() - started
    assert took < drain + 4, f"took {took:.1f} s to stop:\n{agent.output}"
    assert "reports wait for it until the drain timeout" in agent.output

    # What it could not send is in the journal.
    journal = Journal(work / JOURNAL_FILE)
    try:
        record = journal.get((job_id, 1))
        assert record is not None and record.outcome is not None
        assert (record.phase, record.outcome.exit_code) == ("finished", 0)
    finally:
        journal.close()

    # The next start sends it: the job completes on its first attempt, and is paid.
    server.start()
    await (await login(platform.url, Credential(username="bob", secret=PASSWORDS["bob"]))).close()
    again = AgentProcess(platform.url, work).start()
    await readable(nc)
    world = await wait_for(nc, settled(job_id), timeout=60, what="the job to be reported")
    job = world.job(job_id)
    assert (job.status, job.attempt, job.exit_code) == ("completed", 1, 0), again.output
    check_usage(await history(nc), job_id, job.price)
    assert again.stop() == 0


async def test_a_revoked_login_is_said_at_every_attempt_and_the_agent_keeps_trying(
    platform: Platform, nc: NATS, tmp_path: Path
) -> None:
    """The agent cannot tell a refusal from a platform that is still restarting (both are
    an "Authorization Violation"; the throttle refuses a user's logins after someone else
    guessed wrong), so it does not give up on a refusal; it says it, every time."""
    del nc
    agent = AgentProcess(platform.url, tmp_path / "work")
    login_env = {**agent.env, "DANTE_NATS_URL": platform.url}
    result = dante("login", env=login_env, clean=True)
    assert result.returncode == 0, result.stderr
    del agent.env["DANTE_PASSWORD"]  # it logs in with the stored token
    agent.start()
    assert agent.reader is not None
    mark = len(agent.reader.lines)

    result = dante("logout", env=login_env, clean=True)  # revoked: its connection is kicked
    assert result.returncode == 0, result.stderr
    # nats-py would retry it every second without a word: the agent takes over.
    refused = agent.reader.wait_for("refused the agent's login when it reconnected", 30, mark)
    for attempt in (1, 2):
        at = agent.reader.wait_for(f'"attempts": {attempt}', 30, refused)
        said = agent.reader.lines[at]
        assert "the platform refused the agent's login; trying again" in said
        assert "wrong user name or password, or a revoked login" in said
        assert '"level": "error"' in said
    assert agent.process is not None and agent.process.poll() is None  # still serving
    assert agent.stop() == 0, agent.output
