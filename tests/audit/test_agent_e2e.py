"""With everything real (`dante up`, `dante agent run` killed mid-job and restarted, a
renter's jobs): `dante audit` as the operator finds the log clean and the live views equal
to a replay, and the renter's and the provider's statements of a job carry one digest."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest
from nats.aio.client import Client as NATS

from dante.cli.statement import fetch_statement
from dante.client.connect import connect
from dante.client.credentials import Credential, platform_credential
from tests.agent.agent_proc import PASSWORDS, AgentProcess, Platform
from tests.agent.daemon_helpers import Renter, settled, wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    up = Platform(tmp_path / "platform").start().open_accounts()
    try:
        yield up
    finally:
        up.stop()


@pytest.fixture
async def nc(platform: Platform) -> AsyncIterator[NATS]:
    credential = platform_credential(platform.platform_password)
    client = await connect(platform.url, name="test", credential=credential, forever=True)
    try:
        yield client
    finally:
        await client.close()


async def test_a_real_agents_jobs_audit_clean_with_one_digest_for_both_sides(
    platform: Platform, nc: NATS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await connect(
        platform.url, name="alice", credential=Credential("alice", PASSWORDS["alice"])
    )
    try:
        renter = Renter(alice)
        await renter.deposit(100)
        work = tmp_path / "work"
        agent = AgentProcess(platform.url, work).start()
        lost = await renter.submit("import time; time.sleep(4)")
        await wait_for(nc, lambda w: w.job(lost).status == "running", what="the job to start")
        await anyio.sleep(2.2)  # a tick or two
        agent.kill()
        again = AgentProcess(platform.url, work).start()
        done = await renter.submit("print('hello', flush=True)")
        await wait_for(nc, lambda w: settled(lost)(w) and settled(done)(w), what="both jobs")
        assert again.stop() == 0
    finally:
        await alice.close()

    report = platform.dante("audit", "--json", "--data-dir", str(platform.data_dir))
    assert report.returncode == 0, report.stdout + report.stderr
    found = json.loads(report.stdout)
    assert found["ok"] and found["views"]["compared"], found
    assert found["pending"] == []

    monkeypatch.setenv("XDG_CONFIG_HOME", platform.env["XDG_CONFIG_HOME"])
    digests = {}
    for name in ("alice", "bob"):
        monkeypatch.setenv("DANTE_USERNAME", name)
        monkeypatch.setenv("DANTE_PASSWORD", PASSWORDS[name])
        statement = await fetch_statement(platform.url, lost, to_seq=None, provider=name == "bob")
        digests[name] = statement.digest
        assert [a.ended for a in statement.attempts] == ["requeued", "completed"]
        assert statement.attempts[0].usage and statement.charged_udgpu > 0
    assert digests["alice"] == digests["bob"]
