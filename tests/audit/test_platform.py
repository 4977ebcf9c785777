"""Against a real platform: its log audits clean, a replay equals its live views row for row,
and a job's statement is the same for its renter and its provider.

One busy history is played through the real command service and handlers (the agent is
simulated by its commands): jobs that complete with usage, a provider lost mid-job and the
job requeued elsewhere, a job stopped when its funds run out, a cancelled job, a queued job,
and a provider's withdrawal.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NATS

from dante.client.commands import Client, CommandError, new_command_id
from dante.platform import Platform
from dante.projections import rebuild
from dante.projections.audit import audit
from dante.projections.job_events import Stored, job_events
from dante.projections.statement import build_statement, digest_of
from dante.schemas import commands as cmd
from dante.schemas.money import cost
from dante.schemas.statements import JobStatement
from dante.schemas.values import GpuSample, UsageTick
from tests.handlers.conftest import Clock
from tests.handlers.harness import DGPU, PRICE, WINDOW, Agent, deposit, running_platform, submit
from tests.handlers.harness import tick as timers
from tests.projections.helpers import dump_file

pytestmark = pytest.mark.anyio


@dataclass
class Played:
    platform: Platform
    completed: str
    requeued: str
    stopped: str
    cancelled: str


async def use(agent: Agent, platform: Platform, job_id: str, attempt: int = 1, ms: int = 10_000):
    """One usage tick on the GPUs the job holds (the harness's agent assumes GPU 0)."""
    agent.ticks[(job_id, attempt)] = seq = agent.ticks.get((job_id, attempt), 0) + 1
    indices = platform.tail.world.job(job_id).gpu_indices
    samples = [
        GpuSample(index=i, gpu_ms=ms, utilization_pct=90, power_w=300, temperature_c=70)
        for i in indices
    ]
    await agent.client.send(
        cmd.RecordUsage(
            command_id=new_command_id(),
            provider_id=agent.provider_id,
            job_id=job_id,
            attempt=attempt,
            ticks=[UsageTick(seq=seq, ended_at=platform.options.clock(), samples=samples)],
        )
    )


async def play(nc: NATS, platform: Platform, clock: Clock) -> Played:
    bob, carol = Agent(nc, "bob", "prv-a"), Agent(nc, "carol", "prv-b")
    await bob.register(n=2)
    await carol.register(price=2 * PRICE)
    await deposit(nc, "alice", 20 * DGPU)
    await deposit(nc, "dave", WINDOW)

    completed = await submit(nc)
    requeued = await submit(nc)
    await platform.settle()
    await bob.start(completed)
    await bob.start(requeued)
    for _ in range(3):
        clock.advance(10)
        await use(bob, platform, completed)
        await use(bob, platform, requeued)
    await platform.settle()
    await bob.finish(completed)
    await platform.settle()

    # bob falls silent: `requeued` moves to carol as attempt 2 and runs there.
    clock.advance(31)
    await timers(platform, clock, carol)
    await carol.start(requeued, attempt=2)
    clock.advance(10)
    await use(carol, platform, requeued, attempt=2)
    await carol.finish(requeued, attempt=2)
    await platform.settle()

    # dave can afford only the first hold: warned, then stopped after the grace period.
    await bob.beat(platform, clock)
    await platform.tick()
    stopped = await submit(nc, "dave")
    await platform.settle()
    assert platform.tail.world.job(stopped).provider_id == "prv-a"
    await bob.start(stopped)
    clock.advance(400)
    await use(bob, platform, stopped, ms=400_000)
    await platform.settle()
    clock.advance(301)
    await timers(platform, clock, bob, carol)

    cancelled = await submit(nc)
    await platform.settle()
    placed = platform.tail.world.job(cancelled)
    agent = bob if placed.provider_id == "prv-a" else carol
    if placed.provider_id:
        await agent.start(cancelled)
        clock.advance(3)
        await use(agent, platform, cancelled, ms=3_000)
    await Client(nc, "renter", "alice").send(
        cmd.CancelJob(command_id=new_command_id(), job_id=cancelled)
    )
    await platform.settle()
    if placed.provider_id:
        # It takes 30 s to stop: only the 10 s stop grace of them is billed.
        clock.advance(30)
        await use(agent, platform, cancelled, ms=30_000)
        await agent.finish(cancelled, exit_code=143)

    await deposit(nc, "carol", 20 * DGPU)
    await carol.client.send(cmd.Withdraw(command_id=new_command_id(), amount=10 * DGPU))
    await platform.settle()
    assert await platform.settle_payouts() == 0  # paid on chain
    await platform.settle()
    world = platform.tail.world
    assert world.job(completed).status == "completed"
    assert (world.job(requeued).status, world.job(requeued).attempt) == ("completed", 2)
    assert world.job(stopped).status == "stopped"
    assert world.job(cancelled).status == "cancelled"
    assert world.books[(cancelled, 1)].charged == cost(placed.price, 13_000)
    assert world.wallet("carol").withdrawn == 10 * DGPU
    return Played(platform, completed, requeued, stopped, cancelled)


@pytest.fixture
async def played(nc: NATS, tmp_path: Path) -> AsyncIterator[Played]:
    clock = Clock()
    async with running_platform(nc, tmp_path, clock) as platform:
        yield await play(nc, platform, clock)


async def test_a_real_history_audits_clean_and_agrees_with_the_live_views(
    played: Played, tmp_path: Path
) -> None:
    platform = played.platform
    live = platform.views.db_path
    report = await audit(platform.store, views=live)
    assert report.ok, [v.message for v in report.violations]
    assert report.position == await platform.store.last_seq()
    assert report.pending == []
    assert report.views is not None and report.views.compared
    assert report.views.position == platform.views.position == report.position
    kinds = {type(r.event).__name__ async for r in platform.store.read()}
    assert {"FundsCharged", "JobRequeued", "JobStopped", "FundsWithdrawn"} <= kinds


async def test_a_replay_to_the_live_checkpoint_equals_the_live_views(
    played: Played, tmp_path: Path
) -> None:
    platform = played.platform
    checkpoint = platform.views.position
    replayed = tmp_path / "replay.sqlite3"
    report = await rebuild(platform.store, replayed, to_seq=checkpoint)
    assert report.position == checkpoint
    assert await dump_file(replayed) == await dump_file(platform.views.db_path)


async def statements(
    nc: NATS, job_id: str, owner: str, to_seq: int | None = None
) -> tuple[JobStatement, ...]:
    as_renter = await Client(nc, "renter", "alice").send(
        cmd.GetJobStatement(job_id=job_id, to_seq=to_seq), JobStatement
    )
    as_provider = await Client(nc, "provider", owner).send(
        cmd.GetProviderJobStatement(job_id=job_id, to_seq=to_seq), JobStatement
    )
    return as_renter, as_provider


async def test_renter_and_provider_get_the_same_statement_and_digest(
    nc: NATS, played: Played
) -> None:
    store = played.platform.store
    as_renter, as_provider = await statements(nc, played.requeued, "carol")
    assert as_renter == as_provider
    # The lost attempt's provider sees the very same statement.
    assert (await statements(nc, played.requeued, "bob"))[1] == as_renter

    first, second = as_renter.attempts
    assert (first.provider_id, first.ended, second.provider_id, second.ended) == (
        "prv-a",
        "requeued",
        "prv-b",
        "completed",
    )
    assert [len(first.usage), len(second.usage)] == [3, 1]
    assert first.usage[0].samples[0].gpu_ms == 10_000
    assert first.charged_udgpu == cost(PRICE, 30_000)
    # Lost to its provider: everything it was charged is given back.
    assert first.refunded_udgpu == first.charged_udgpu
    assert second.charged_udgpu == cost(2 * PRICE, 10_000)
    assert (second.refunded_udgpu, as_renter.refunded_udgpu) == (0, first.charged_udgpu)
    for attempt in as_renter.attempts:
        assert attempt.fee_udgpu + attempt.provider_credit_udgpu == attempt.charged_udgpu
        assert attempt.hold_udgpu == 0
        assert attempt.held_udgpu == attempt.charged_udgpu + attempt.released_udgpu
    assert as_renter.charged_udgpu == first.charged_udgpu + second.charged_udgpu
    kinds = [entry.type for entry in as_renter.events]
    for kind in ("JobSubmitted", "GpusReserved", "FundsHeld", "JobAssigned", "UsageRecorded"):
        assert kind in kinds
    for kind in ("FundsCharged", "ProviderCredited", "FeeCollected", "JobRequeued"):
        assert kind in kinds
    assert kinds.count("ChargeRefunded") == 1 and kinds.count("CreditReversed") == 2
    assert kinds.count("GpusReleased") == 2 and kinds.count("HoldReleased") == 2

    # The digest is the chain over the stored bytes of exactly these events, in log order.
    seqs = [entry.seq for entry in as_renter.events]
    assert seqs == sorted(seqs)
    by_seq = {m.seq: m.data async for chunk in store.read_messages() for m in chunk}
    entries = [(s, hashlib.sha256(by_seq[s]).hexdigest()) for s in seqs]
    assert digest_of(played.requeued, entries) == as_renter.digest
    assert as_renter.events[-1].chain == as_renter.digest
    # Nothing of the job was left out: every event in the log that names it is there.
    naming = [s for s, data in by_seq.items() if f'"job_id":"{played.requeued}"'.encode() in data]
    assert set(naming) <= set(seqs)


async def test_the_digest_changes_if_any_event_changes(nc: NATS, played: Played) -> None:
    store = played.platform.store
    events = await job_events(store, played.completed)
    digest = build_statement(played.completed, events).digest
    assert build_statement(played.completed, reversed(events)).digest == digest
    for n, record in enumerate(events):
        changed = record.payload.replace(b'"at":"', b'"at":"1', 1)
        assert changed != record.payload
        altered = [*events[:n], Stored(record.seq, record.subject, changed, record.event)]
        altered += events[n + 1 :]
        assert build_statement(played.completed, altered).digest != digest
        moved = [*events[:n], dataclasses.replace(record, seq=record.seq + 10**6)]
        assert build_statement(played.completed, moved + events[n + 1 :]).digest != digest
        assert build_statement(played.completed, events[:n] + events[n + 1 :]).digest != digest

    # A statement as of an earlier position is a prefix of the later one.
    renter, _ = await statements(nc, played.completed, "bob")
    middle = renter.events[len(renter.events) // 2].seq
    earlier, earlier_provider = await statements(nc, played.completed, "bob", to_seq=middle)
    assert earlier == earlier_provider
    assert earlier.digest == renter.events[len(renter.events) // 2].chain
    assert earlier.events == renter.events[: len(earlier.events)]


async def test_only_the_renter_and_its_providers_read_a_statement(nc: NATS, played: Played) -> None:
    # Another account's job reads as one that does not exist: one answer for both.
    for client, job_id in [
        (Client(nc, "renter", "dave"), played.completed),
        (Client(nc, "provider", "carol"), played.completed),  # ran only on prv-a
        (Client(nc, "renter", "alice"), "no-such-job"),
    ]:
        query: cmd.Command[Any] = (
            cmd.GetJobStatement(job_id=job_id)
            if client.role == "renter"
            else cmd.GetProviderJobStatement(job_id=job_id)
        )
        with pytest.raises(CommandError) as caught:
            await client.send(query)
        assert caught.value.code == "unknown_job"
        assert caught.value.info.message == f"you have no job {job_id}"
