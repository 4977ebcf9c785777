"""The command service against a real nats-server: every command, every rejection path."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client as NATS
from solders.keypair import Keypair

from dante.chain.local import LocalChain
from dante.client.commands import Client, CommandError, new_command_id
from dante.client.payments import faucet, pay_deposit
from dante.events.records import Append
from dante.events.store import EventStore
from dante.schemas import commands as cmd
from dante.schemas import events as ev
from dante.schemas.results import JobResult, ProviderResult, SubmitResult, WalletResult
from dante.schemas.values import GpuOffer, GpuSample, JobRequirements, ScriptPayload, UsageTick
from dante.services.commands import CommandService
from tests.factories import SOLANA, gpu
from tests.factories import deposit as deposit_event
from tests.funding import fund
from tests.handlers.conftest import Clock

pytestmark = pytest.mark.anyio

DGPU = 1_000_000


def cid() -> str:
    return new_command_id()


async def events(store: EventStore) -> list[ev.Event]:
    return [r.event async for r in store.read()]


async def rejected(client: Client, command: cmd.Command[Any]) -> CommandError:
    with pytest.raises(CommandError) as info:
        await client.send(command)
    return info.value


def register_cmd(
    provider_id: str = "prv-a", n: int = 2, price: int = 500_000
) -> cmd.RegisterProvider:
    return cmd.RegisterProvider(
        command_id=cid(),
        provider_id=provider_id,
        name="rig",
        location="eu-west",
        payout_address=SOLANA,
        gpus=[gpu(i) for i in range(n)],
        offers=[GpuOffer(index=i, price=price) for i in range(n)],
    )


def submit_cmd(**req: Any) -> cmd.SubmitJob:
    return cmd.SubmitJob(
        command_id=cid(),
        name="train",
        requirements=JobRequirements(**req),
        payload=ScriptPayload(script="print('hi')"),
    )


# ── wallets ─────────────────────────────────────────────────────────────────────────────


async def test_deposit_credits_the_callers_wallet(as_, store: EventStore) -> None:
    alice = as_("renter", "alice")
    result = await fund(alice, 5 * DGPU)
    assert (result.wallet_id, result.available_udgpu, result.total_udgpu) == (
        "alice",
        5 * DGPU,
        5 * DGPU,
    )
    result = await fund(alice, DGPU)
    assert result.available_udgpu == 6 * DGPU
    kept = [e for e in await events(store) if isinstance(e, ev.FundsDeposited)]
    first, second = kept
    assert isinstance(second, ev.FundsDeposited) and second.amount == DGPU
    assert first.wallet_id == "alice" and first.signature
    assert first.cause.startswith("cmd:renter:alice:")
    credited = [e for e in await events(store) if isinstance(e, ev.PaymentCredited)]
    assert [c.signature for c in credited] == [first.signature, second.signature]


async def test_a_retried_command_gets_the_same_reply_and_appends_nothing(
    as_, store: EventStore, nc: NATS, service: CommandService, chain: LocalChain
) -> None:
    alice = as_("renter", "alice")
    payer = Keypair()
    await faucet(alice, str(payer.pubkey()), 5 * DGPU)
    command_id = cid()
    _, first = await pay_deposit(alice, payer, 5 * DGPU, command_id=command_id)
    (deposited,) = [e for e in await events(store) if isinstance(e, ev.FundsDeposited)]
    deposit = cmd.Deposit(command_id=command_id, amount=5 * DGPU, signature=deposited.signature)
    again = await alice.send(deposit, WalletResult)
    assert again == first
    # Even from an instance that never saw it (a restart, another replica).
    other = CommandService(nc, store, chain=chain)
    await service.stop()
    await other.start()
    try:
        third = await alice.send(deposit, WalletResult)
    finally:
        await other.stop()
    assert third.available_udgpu == 5 * DGPU
    assert len(await events(store)) == 2  # the deposit and its payment, once


async def test_concurrent_withdrawals_cannot_both_spend_the_same_funds(
    as_, store: EventStore
) -> None:
    bob = as_("provider", "bob")
    await bob.send(register_cmd())
    await store.append(Append(event=deposit_event("bob", 15)))
    results = await asyncio.gather(
        *(bob.send(cmd.Withdraw(command_id=cid(), amount=10 * DGPU)) for _ in range(5)),
        return_exceptions=True,
    )
    ok = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, CommandError)]
    assert len(ok) == 1 and len(refused) == 4
    assert all(r.code == "insufficient_funds" for r in refused)
    withdrawals = [e for e in await events(store) if isinstance(e, ev.WithdrawalRequested)]
    assert len(withdrawals) == 1 and withdrawals[0].payout_address == SOLANA


async def test_withdrawal_rules(as_, store: EventStore) -> None:
    bob = as_("provider", "bob")
    error = await rejected(bob, cmd.Withdraw(command_id=cid(), amount=9 * DGPU))
    assert (error.code, error.info.field) == ("invalid", "amount")
    assert "10 dGPU" in error.info.message
    error = await rejected(bob, cmd.Withdraw(command_id=cid(), amount=10 * DGPU))
    assert error.code == "insufficient_funds" and "0 dGPU is available" in error.info.message
    assert await events(store) == []


# ── providers ───────────────────────────────────────────────────────────────────────────


async def test_register_update_and_deregister_a_provider(as_, store: EventStore) -> None:
    bob = as_("provider", "bob")
    result = await bob.send(register_cmd(), ProviderResult)
    assert result == ProviderResult(provider_id="prv-a", status="online")
    await bob.send(
        cmd.UpdateOffer(
            command_id=cid(),
            provider_id="prv-a",
            offers=[GpuOffer(index=1, price=1, available=False)],
        )
    )
    result = await bob.send(
        cmd.DeregisterProvider(command_id=cid(), provider_id="prv-a"), ProviderResult
    )
    assert result.status == "deregistered"
    kinds = [type(e).__name__ for e in await events(store)]
    assert kinds == ["ProviderRegistered", "OfferUpdated", "ProviderDeregistered"]
    registered = (await events(store))[0]
    assert isinstance(registered, ev.ProviderRegistered) and registered.owner == "bob"


async def test_provider_rejections(as_, store: EventStore) -> None:
    bob, eve = as_("provider", "bob"), as_("provider", "eve")
    await bob.send(register_cmd())
    before = len(await events(store))
    error = await rejected(eve, register_cmd())
    assert (error.code, error.info.field) == ("not_your_provider", "provider_id")
    error = await rejected(
        eve,
        cmd.UpdateOffer(command_id=cid(), provider_id="prv-a", offers=[GpuOffer(index=0, price=1)]),
    )
    assert error.code == "not_your_provider"
    error = await rejected(
        bob,
        cmd.UpdateOffer(
            command_id=cid(), provider_id="prv-zz", offers=[GpuOffer(index=0, price=1)]
        ),
    )
    assert error.code == "unknown_provider"
    error = await rejected(
        bob,
        cmd.UpdateOffer(command_id=cid(), provider_id="prv-a", offers=[GpuOffer(index=7, price=1)]),
    )
    assert (error.code, error.info.field) == ("invalid", "offers[0].index")
    twice = register_cmd("prv-b")
    twice = msgspec.structs.replace(twice, gpus=[gpu(0), gpu(0)])
    error = await rejected(bob, twice)
    assert (error.code, error.info.field) == ("invalid", "gpus[1].index")
    assert len(await events(store)) == before


async def test_malformed_commands_get_typed_errors(
    nc: NATS, service: CommandService, store: EventStore
) -> None:
    cases = {
        "dante.cmd.renter.alice.deposit": b"{",
        "dante.cmd.renter.alice.submit": b'{"command_id": "cmd-00000001", "requirements": '
        b'{"gpu_count": 0}, "payload": {"kind": "script", '
        b'"script": "x"}}',
        "dante.cmd.renter.Alice!.deposit": b'{"command_id": "cmd-00000001", "amount": 1}',
        "dante.cmd.renter.platform.deposit": b'{"command_id": "cmd-00000001", "amount": 1}',
        "dante.cmd.renter.alice.deposit.extra": b"{}",
    }
    for subject, body in cases.items():
        try:
            msg = await nc.request(subject, body, timeout=2)
        except Exception:
            # "…deposit.extra" matches no endpoint: nobody answers, nothing happens.
            assert subject.endswith("extra")
            continue
        reply = msgspec.json.decode(msg.data)
        assert reply["ok"] is False, subject
        assert reply["error"]["code"] in ("malformed", "forbidden"), subject
    gpu_zero = await nc.request(
        "dante.cmd.renter.alice.submit", cases["dante.cmd.renter.alice.submit"], timeout=2
    )
    assert msgspec.json.decode(gpu_zero.data)["error"]["field"] == "requirements.gpu_count"
    assert await events(store) == []


async def test_micro_discovery_answers(nc: NATS, service: CommandService) -> None:
    ping = msgspec.json.decode((await nc.request("$SRV.PING.dante", b"", timeout=2)).data)
    assert ping["name"] == "dante"
    info = msgspec.json.decode((await nc.request("$SRV.INFO.dante", b"", timeout=2)).data)
    subjects = {e["subject"] for e in info["endpoints"]}
    assert "dante.cmd.renter.*.deposit" in subjects and "dante.cmd.provider.*.usage" in subjects
    await fund(Client(nc, "renter", "alice"), 1)
    stats = msgspec.json.decode((await nc.request("$SRV.STATS.dante", b"", timeout=2)).data)
    deposits = next(e for e in stats["endpoints"] if e["name"] == "renter-deposit")
    assert deposits["num_requests"] == 1


# ── the agent's side of a job ───────────────────────────────────────────────────────────


def tick(seq: int, ms: int = 10_000, index: int = 0) -> UsageTick:
    from tests.factories import NOW

    return UsageTick(seq=seq, ended_at=NOW, samples=[GpuSample(index=index, gpu_ms=ms)])


async def assigned_job(store: EventStore, as_: Any) -> str:
    """A registered provider 'prv-a' of bob and a job of alice assigned to GPU 0 there."""
    bob = as_("provider", "bob")
    await bob.send(register_cmd())
    from tests.factories import make, submitted

    job = submitted("job-x", renter="alice")
    await store.append(Append(event=job))
    await store.append(
        Append(
            event=make(
                ev.JobAssigned,
                job_id="job-x",
                attempt=1,
                provider_id="prv-a",
                provider_owner="bob",
                gpu_indices=[0],
                price=500_000,
                fee_bps=500,
                hold=DGPU,
            )
        )
    )
    return "job-x"


async def test_a_job_run_reported_by_its_agent(as_, store: EventStore, clock: Clock) -> None:
    job_id = await assigned_job(store, as_)
    bob = as_("provider", "bob")
    common: dict[str, Any] = {"provider_id": "prv-a", "job_id": job_id, "attempt": 1}
    await bob.send(cmd.AcceptAssignment(command_id=cid(), **common))
    result = await bob.send(cmd.ReportJobStarted(command_id=cid(), **common), JobResult)
    assert result.state == "running"
    clock.advance(25)
    usage = cmd.RecordUsage(command_id=cid(), **common, ticks=[tick(1), tick(2)])
    assert (await bob.send(usage, JobResult)).recorded_ticks == 2
    # The same ticks again under a new command id (an agent restarted): nothing new.
    again = cmd.RecordUsage(command_id=cid(), **common, ticks=[tick(2), tick(3, ms=5_000)])
    assert (await bob.send(again, JobResult)).recorded_ticks == 1
    done = await bob.send(cmd.ReportJobFinished(command_id=cid(), **common, exit_code=0), JobResult)
    assert done.state == "completed"
    recorded = [e for e in await events(store) if isinstance(e, ev.UsageRecorded)]
    assert [[t.seq for t in e.ticks] for e in recorded] == [[1, 2], [3]]


async def test_usage_of_simulated_gpus_is_marked_whatever_the_agent_sent(
    as_, store: EventStore, clock: Clock
) -> None:
    bob = as_("provider", "bob")
    simulated = msgspec.structs.replace(
        register_cmd("prv-s", n=1), gpus=[msgspec.structs.replace(gpu(0), simulated=True)]
    )
    await bob.send(simulated)
    from tests.factories import make, submitted

    await store.append(Append(event=submitted("job-s", renter="alice")))
    assigned = make(
        ev.JobAssigned, job_id="job-s", attempt=1, provider_id="prv-s", provider_owner="bob",
        gpu_indices=[0], price=500_000, fee_bps=500, hold=DGPU,
    )  # fmt: skip
    await store.append(Append(event=assigned))
    common: dict[str, Any] = {"provider_id": "prv-s", "job_id": "job-s", "attempt": 1}
    await bob.send(cmd.AcceptAssignment(command_id=cid(), **common))
    await bob.send(cmd.ReportJobStarted(command_id=cid(), **common), JobResult)
    clock.advance(25)
    # The agent leaves the flag out (an older agent, or one that would pass it off as real).
    await bob.send(cmd.RecordUsage(command_id=cid(), **common, ticks=[tick(1)]), JobResult)

    [recorded] = [e for e in await events(store) if isinstance(e, ev.UsageRecorded)]
    assert [s.simulated for t in recorded.ticks for s in t.samples] == [True]


def test_usage_recorded_before_the_flag_reads_as_not_simulated() -> None:
    from dante.events.codec import decode_event
    from tests.factories import NOW, make

    event = make(ev.UsageRecorded, job_id="job-o", attempt=1, ticks=[tick(1)])
    raw = msgspec.json.decode(msgspec.json.encode(event))
    for sample in raw["ticks"][0]["samples"]:
        del sample["simulated"]  # as stored before GpuSample had it
    old = decode_event(msgspec.json.encode(raw))
    assert isinstance(old, ev.UsageRecorded)
    assert old.ticks[0].samples[0].simulated is False
    assert old.ticks[0].ended_at == NOW


async def test_agent_rejections(as_, store: EventStore, clock: Clock) -> None:
    job_id = await assigned_job(store, as_)
    bob, eve = as_("provider", "bob"), as_("provider", "eve")
    await eve.send(register_cmd("prv-e"))
    common: dict[str, Any] = {"provider_id": "prv-a", "job_id": job_id, "attempt": 1}
    before = len(await events(store))
    error = await rejected(eve, cmd.ReportJobStarted(command_id=cid(), **common))
    assert error.code == "not_your_provider"
    error = await rejected(
        eve, cmd.ReportJobStarted(command_id=cid(), provider_id="prv-e", job_id=job_id, attempt=1)
    )
    # A job that never ran on the provider reads as no job at all (no existence oracle).
    assert (error.code, error.info.message) == ("unknown_job", f"you have no job {job_id}")
    error = await rejected(bob, cmd.RecordUsage(command_id=cid(), **common, ticks=[tick(1)]))
    assert error.code == "wrong_state" and "not started" in error.info.message
    error = await rejected(
        bob, cmd.ReportJobStarted(command_id=cid(), provider_id="prv-a", job_id=job_id, attempt=2)
    )
    assert (error.code, error.info.field) == ("wrong_state", "attempt")
    error = await rejected(
        bob,
        cmd.ReportJobStarted(command_id=cid(), provider_id="prv-a", job_id="job-nope", attempt=1),
    )
    assert error.code == "unknown_job"
    assert len(await events(store)) == before
    await bob.send(cmd.ReportJobStarted(command_id=cid(), **common))
    clock.advance(10)
    # More GPU time than the job has been running.
    error = await rejected(
        bob, cmd.RecordUsage(command_id=cid(), **common, ticks=[tick(1, ms=60_000)])
    )
    assert (error.code, error.info.field) == ("invalid", "ticks")
    error = await rejected(
        bob, cmd.RecordUsage(command_id=cid(), **common, ticks=[tick(1, index=1)])
    )
    assert error.info.field == "ticks[0].samples[0].index"
    error = await rejected(
        bob, cmd.RecordUsage(command_id=cid(), **common, ticks=[tick(2), tick(1)])
    )
    assert error.info.field == "ticks[1].seq"
    await bob.send(cmd.ReportJobFinished(command_id=cid(), **common, exit_code=3))
    error = await rejected(bob, cmd.RecordUsage(command_id=cid(), **common, ticks=[tick(1)]))
    assert error.code == "job_finished"
    failed = [e for e in await events(store) if isinstance(e, ev.JobFailed)]
    assert failed[0].reason == "the job exited with code 3"


async def test_cancel_requested_while_running_ends_cancelled(as_, store: EventStore) -> None:
    job_id = await assigned_job(store, as_)
    bob, alice, eve = as_("provider", "bob"), as_("renter", "alice"), as_("renter", "eve")
    common: dict[str, Any] = {"provider_id": "prv-a", "job_id": job_id, "attempt": 1}
    await bob.send(cmd.ReportJobStarted(command_id=cid(), **common))
    error = await rejected(eve, cmd.CancelJob(command_id=cid(), job_id=job_id))
    missing = await rejected(eve, cmd.CancelJob(command_id=cid(), job_id="job-none"))
    # Another account's job and none at all get the one answer.
    assert (error.code, error.info.message) == ("unknown_job", f"you have no job {job_id}")
    assert (missing.code, missing.info.message) == ("unknown_job", "you have no job job-none")
    assert (
        await alice.send(cmd.CancelJob(command_id=cid(), job_id=job_id), JobResult)
    ).state == "running"
    done = await bob.send(
        cmd.ReportJobFinished(command_id=cid(), **common, exit_code=143), JobResult
    )
    assert done.state == "cancelled"
    error = await rejected(alice, cmd.CancelJob(command_id=cid(), job_id=job_id))
    assert error.code == "job_finished"


# ── submissions (need the market) ───────────────────────────────────────────────────────


async def test_submit_checks_the_market_and_the_funds(as_, store: EventStore) -> None:
    bob, alice = as_("provider", "bob"), as_("renter", "alice")
    error = await rejected(alice, submit_cmd(gpu_count=1))
    assert error.code == "no_matching_offer"
    await bob.send(register_cmd(n=2, price=500_000))
    error = await rejected(alice, submit_cmd(gpu_count=4))
    assert error.code == "no_matching_offer"
    error = await rejected(alice, submit_cmd(gpu_count=1, gpu_model="H100"))
    assert error.code == "no_matching_offer"
    error = await rejected(alice, submit_cmd(gpu_count=1, max_price=100_000))
    assert (error.code, error.info.field) == ("price_cap_too_low", "requirements.max_price")
    # 1 GPU x 0.5 dGPU/h x 10 min window = 0.083333 dGPU
    error = await rejected(alice, submit_cmd(gpu_count=1))
    assert error.code == "insufficient_funds"
    assert "0.083333 dGPU" in error.info.message and "0 dGPU is available" in error.info.message
    await fund(alice, DGPU)
    before = len(await events(store))
    submit = submit_cmd(gpu_count=2, max_duration_s=3600)
    result = await alice.send(submit, SubmitResult)
    assert result.state == "queued" and result.price_udgpu == 500_000
    assert result.first_hold_udgpu == DGPU
    assert (await alice.send(submit, SubmitResult)) == result
    submitted = [e for e in await events(store) if isinstance(e, ev.JobSubmitted)]
    assert len(submitted) == 1 and submitted[0].job_id == result.job_id
    assert len(await events(store)) == before + 1


async def test_another_provider_cannot_report_on_an_ended_job(as_, store: EventStore) -> None:
    job_id = await assigned_job(store, as_)
    bob, eve = as_("provider", "bob"), as_("provider", "eve")
    await eve.send(register_cmd("prv-e"))
    common: dict[str, Any] = {"provider_id": "prv-a", "job_id": job_id, "attempt": 1}
    await bob.send(cmd.ReportJobStarted(command_id=cid(), **common))
    await bob.send(cmd.ReportJobFinished(command_id=cid(), **common, exit_code=0))
    before = len(await events(store))
    from dante.schemas.values import FileRef

    forged = FileRef(object=f"results/{job_id}/1.tar.gz", path="out", size=1, sha256="0" * 64)
    error = await rejected(
        eve,
        cmd.ReportJobFinished(
            command_id=cid(),
            provider_id="prv-e",
            job_id=job_id,
            attempt=1,
            exit_code=0,
            results=forged,
        ),
    )
    assert error.code == "unknown_job"
    # Results that were not uploaded for this job are refused too.
    elsewhere = FileRef(object="inputs/alice/x/data.bin", path="out", size=1, sha256="0" * 64)
    error = await rejected(
        bob, cmd.ReportJobFinished(command_id=cid(), **common, exit_code=0, results=elsewhere)
    )
    assert (error.code, error.info.field) == ("invalid", "results")
    assert len(await events(store)) == before
