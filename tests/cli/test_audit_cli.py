"""`dante replay`, `dante audit` and `dante events` as real processes; `dante jobs statement`
(registered under `jobs` by the jobs command group) called in-process."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from nats.aio.client import Client as NATS

from dante.cli.statement import statement
from dante.client.commands import Client
from dante.events.natsd import NatsServer
from dante.events.records import Append
from dante.events.store import EventStore
from dante.platform import Platform
from dante.projections import rebuild
from dante.schemas import events as ev
from dante.schemas.statements import JobStatement
from tests.audit.script import Script
from tests.audit.test_tampering import base, lone_credit
from tests.cli.platform_proc import UpProcess, dante
from tests.factories import deposit
from tests.funding import fund
from tests.handlers.conftest import Clock
from tests.handlers.harness import DGPU, Agent, running_platform, submit
from tests.projections.helpers import dump_file

pytestmark = pytest.mark.anyio


@pytest.fixture
def env(tmp_path: Path, nats_server: NatsServer) -> dict[str, str]:
    """The test server's URL, and a config folder without any stored credential."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DANTE_")}
    return clean | {"DANTE_NATS_URL": nats_server.url, "XDG_CONFIG_HOME": str(tmp_path / "cfg")}


@pytest.fixture
async def history(store: EventStore) -> Script:
    script = base()
    await script.append_to(store)
    return script


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return dante(*args, env=env, clean=True)


# ── dante replay ────────────────────────────────────────────────────────────────────────


async def test_replay_writes_the_views_at_a_sequence_or_a_time(
    env: dict[str, str], history: Script, store: EventStore, tmp_path: Path
) -> None:
    out = tmp_path / "replay.sqlite3"
    done = run(env, "replay", "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["position"], summary["events"]) == (history.seq, history.seq)
    assert summary["rows"]["job_records"] == 3 and summary["events_per_second"] > 0
    await rebuild(store, tmp_path / "mine.sqlite3")
    assert await dump_file(out) == await dump_file(tmp_path / "mine.sqlite3")
    assert done.stderr == ""  # no progress bar when stderr is not a terminal

    again = run(env, "replay", "--out", str(out))
    assert again.returncode == 2 and "--force" in again.stderr
    earlier = run(env, "replay", "--out", str(out), "--to-seq", "5", "--force")
    assert earlier.returncode == 0, earlier.stderr
    assert "to sequence 5 " in earlier.stdout and "wrote" in earlier.stdout

    history.later(3600).deposit("carol", 1)
    await history.append_to(store)
    moment = history.at.replace(tzinfo=None).isoformat()  # no zone: UTC
    by_time = run(env, "replay", "--out", str(out), "--until", moment, "--force", "--json")
    assert json.loads(by_time.stdout)["position"] == history.seq
    before = run(env, "replay", "--out", str(out), "--until", "2026-11-26T12:59:59Z", "--force")
    assert before.returncode == 0 and f"to sequence {history.seq - 1} " in before.stdout

    both = run(env, "replay", "--to-seq", "3", "--until", moment)
    assert both.returncode == 2 and "not both" in both.stderr
    assert run(env, "replay", "--until", "yesterday").returncode == 2


# ── dante audit ─────────────────────────────────────────────────────────────────────────


async def test_audit_exits_0_on_a_clean_log_and_compares_the_views(
    env: dict[str, str], history: Script, store: EventStore, tmp_path: Path
) -> None:
    views = tmp_path / "data" / "views.sqlite3"
    views.parent.mkdir()
    await rebuild(store, views)
    done = run(env, "audit", "--data-dir", str(views.parent))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every invariant holds" in done.stdout
    assert f"at sequence {history.seq}: equal the replay" in done.stdout
    report = json.loads(run(env, "audit", "--json", "--skip-views").stdout)
    assert report["ok"] is True and report["views"] is None
    assert report["position"] == history.seq and set(report["counts"]) >= {"conservation"}


async def test_audit_exits_1_and_names_each_violation(
    env: dict[str, str], history: Script, store: EventStore
) -> None:
    expected = lone_credit(history)
    await history.append_to(store)
    done = run(env, "audit", "--skip-views")
    assert done.returncode == 1
    (seq,) = expected["conservation"][0]
    for code in expected:
        assert any(line.split()[:2] == [code, str(seq)] for line in done.stdout.splitlines()), (
            done.stdout
        )
    assert "2 violation(s): charge_batch 1, conservation 1" in done.stdout
    report = json.loads(run(env, "audit", "--json", "--skip-views").stdout)
    assert not report["ok"]
    assert {(v["code"], tuple(v["seqs"])) for v in report["violations"]} == {
        ("conservation", (seq,)),
        ("charge_batch", (seq,)),
    }
    # Up to a sequence before the tampering, all is well.
    assert run(env, "audit", "--to-seq", str(seq - 1), "--skip-views").returncode == 0


def test_audit_exit_codes_for_bad_use_and_no_platform(env: dict[str, str], tmp_path: Path) -> None:
    missing = run(env, "audit", "--views", str(tmp_path / "nope.sqlite3"))
    assert missing.returncode == 2 and "no views file" in missing.stderr
    gone = run(env | {"DANTE_NATS_URL": "nats://127.0.0.1:1"}, "audit", "--skip-views")
    assert gone.returncode == 3 and "cannot reach" in gone.stderr


# ── dante events ────────────────────────────────────────────────────────────────────────


async def test_events_browse_and_filter_the_log(
    env: dict[str, str], history: Script, store: EventStore
) -> None:
    everything = run(env, "events").stdout.splitlines()
    assert [int(line.split()[0]) for line in everything] == list(range(1, history.seq + 1))
    assert "FundsDeposited" in everything[0] and "100 dGPU deposited" in everything[0]

    def seqs(*args: str) -> list[int]:
        done = run(env, "events", "--json", *args)
        assert done.returncode == 0, done.stderr
        return [json.loads(line)["seq"] for line in done.stdout.splitlines()]

    events = {r.seq: r.event async for r in store.read()}
    assert seqs("--job", "job-2") == [
        s for s, e in events.items() if getattr(e, "job_id", None) == "job-2"
    ]
    assert seqs("--provider", "prv-1") == [
        s for s, e in events.items() if getattr(e, "provider_id", None) == "prv-1"
    ]
    assert seqs("--wallet", "carol") == [
        s for s, e in events.items() if getattr(e, "wallet_id", None) == "carol"
    ]
    assert seqs("--from-seq", "20") == list(range(20, history.seq + 1))
    line = json.loads(run(env, "events", "--json", "--from-seq", "3").stdout.splitlines()[0])
    assert line["subject"] == "dante.evt.provider.prv-1" and line["stored_at"]
    assert msgspec.convert(line["event"], ev.ProviderRegistered).owner == "bob"
    both = run(env, "events", "--job", "job-1", "--wallet", "alice")
    assert both.returncode == 2 and "--job and --wallet" in both.stderr


async def test_events_limit_and_last_show_the_first_or_the_last_that_match(
    env: dict[str, str], history: Script, store: EventStore
) -> None:
    def seqs(*args: str) -> list[int]:
        done = run(env, "events", "--json", *args)
        assert done.returncode == 0, done.stderr
        return [json.loads(line)["seq"] for line in done.stdout.splitlines()]

    everything = list(range(1, history.seq + 1))
    assert seqs("--limit", "3") == everything[:3]
    assert seqs("--last", "4") == everything[-4:]
    assert seqs("--limit", "2", "--from-seq", "10") == [10, 11]
    assert seqs("--last", str(history.seq + 50)) == everything
    job = [r.seq async for r in store.read() if getattr(r.event, "job_id", None) == "job-1"]
    wallet = [r.seq async for r in store.read() if getattr(r.event, "wallet_id", "") == "alice"]
    assert len(job) > 3 and len(wallet) > 3
    assert seqs("--job", "job-1", "--last", "2") == job[-2:]
    assert seqs("--job", "job-1", "--limit", "2") == job[:2]
    assert seqs("--wallet", "alice", "--last", "3") == wallet[-3:]
    for bad, says in [
        (["--limit", "0"], "--limit must be 1 or more"),
        (["--last", "-1"], "--last must be 1 or more"),
        (["--limit", "1", "--last", "1"], "not both"),
    ]:
        done = run(env, "events", *bad)
        assert done.returncode == 2 and says in done.stderr, done.stderr


async def test_events_follow_shows_new_events_as_they_come(
    env: dict[str, str], history: Script, store: EventStore
) -> None:
    alice = [r.seq async for r in store.read() if getattr(r.event, "wallet_id", "") == "alice"]
    follower = subprocess.Popen(
        [sys.executable, "-m", "dante", "events", "--follow", "--wallet", "alice"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            lines.put(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        seen = [int(lines.get(timeout=30).split()[0]) for _ in alice]
        assert seen == alice
        landed = await store.append(Append(event=deposit("alice", 7)))
        await store.append(Append(event=deposit("bob", 7)))  # not alice's: not shown
        line = lines.get(timeout=30)
        assert line.split()[0] == str(landed.last) and "7 dGPU deposited" in line
        assert follower.poll() is None  # still following
    finally:
        follower.terminate()
        follower.wait(timeout=10)
        reader.join(timeout=10)
        assert follower.stdout is not None
        follower.stdout.close()
    assert lines.empty()


# ── dante up: the operator reads the log through its own permissions ─────────────────────


@pytest.mark.slow
def test_the_operator_audits_and_replays_a_running_platform(tmp_path: Path) -> None:
    config = tmp_path / "cfg"
    platform = UpProcess(tmp_path / "data", env={"XDG_CONFIG_HOME": str(config)}).start()
    try:
        alice = {"DANTE_USERNAME": "alice", "DANTE_PASSWORD": "alice-secret-1"}
        assert platform.dante("account", "create", **alice).returncode == 0
        report = platform.dante("audit", "--json", "--data-dir", str(tmp_path / "data"))
        assert report.returncode == 0, report.stdout + report.stderr
        found = json.loads(report.stdout)
        assert found["ok"] and found["views"]["compared"] and found["events"] >= 1
        out = tmp_path / "replay.sqlite3"
        replayed = platform.dante("replay", "--out", str(out), "--json")
        assert replayed.returncode == 0, replayed.stderr
        assert json.loads(replayed.stdout)["rows"]["wallet_accounts"] == 1
        lines = platform.dante("events").stdout.splitlines()
        assert any("AccountOpened" in line and "wallet.alice" in line for line in lines)
        # Someone who is not the operator cannot read the log this way.
        refused = platform.dante("audit", XDG_CONFIG_HOME=str(tmp_path / "elsewhere"))
        assert refused.returncode == 1 and "operator" in refused.stderr
    finally:
        assert platform.stop() == 0


# ── dante jobs statement ─────────────────────────────────────────────────────────────────


@pytest.fixture
async def finished_job(nc: NATS, tmp_path: Path) -> AsyncIterator[tuple[Platform, str]]:
    clock = Clock()
    async with running_platform(nc, tmp_path, clock) as platform:
        bob = Agent(nc, "bob", "prv-a")
        await bob.register()
        await fund(Client(nc, "renter", "alice"), 10 * DGPU)
        job_id = await submit(nc)
        await platform.settle()
        await bob.start(job_id)
        clock.advance(25)
        await bob.tick(job_id)
        await bob.tick(job_id)
        await bob.finish(job_id)
        await platform.settle()
        yield platform, job_id


async def test_statement_for_the_renter_and_the_provider(
    nc: NATS,
    finished_job: tuple[Platform, str],
    nats_server: NatsServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    _, job_id = finished_job
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("DANTE_NATS_URL", nats_server.url)
    monkeypatch.setenv("DANTE_PASSWORD", "whatever-1")

    monkeypatch.setenv("DANTE_USERNAME", "alice")
    assert await statement(job_id, json=True) == 0
    as_renter = msgspec.json.decode(capsys.readouterr().out, type=JobStatement)
    assert await statement(job_id) == 0
    human = capsys.readouterr().out
    assert f"job {job_id} of alice: completed" in human
    assert "attempt 1 on prv-a (bob), GPUs [0], 0.5 dGPU/GPU-h, fee 5%: completed" in human
    assert "tick    1" in human and "GPU 0 10 GPU-s" in human
    assert f"digest {as_renter.digest}" in human

    monkeypatch.setenv("DANTE_USERNAME", "bob")
    assert await statement(job_id, provider=True, json=True) == 0
    as_provider = msgspec.json.decode(capsys.readouterr().out, type=JobStatement)
    assert as_provider.digest == as_renter.digest

    # bob ran it: without --provider (a password login says no role) the platform knows.
    assert await statement(job_id, json=True) == 0
    assert msgspec.json.decode(capsys.readouterr().out, type=JobStatement) == as_provider
    # carol never ran it and did not rent it; nobody is logged in.
    monkeypatch.setenv("DANTE_USERNAME", "carol")
    assert await statement(job_id) == 1
    # One answer for a job of another account and a job that does not exist (no oracle).
    assert "you have no job" in capsys.readouterr().err
    assert await statement(job_id, provider=True) == 1
    assert "you have no job" in capsys.readouterr().err
    monkeypatch.delenv("DANTE_USERNAME")
    monkeypatch.delenv("DANTE_PASSWORD")
    assert await statement(job_id) == 1
    assert "not logged in" in capsys.readouterr().err
    assert await statement(job_id, to_seq=0) == 2
