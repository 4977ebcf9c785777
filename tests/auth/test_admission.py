"""One account's flood is refused `rate_limited` while the others are served: requests and
log-writing commands, through the shipped nats.conf and the platform's logins."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from dante.client import commands
from dante.client.commands import Client, CommandError, new_command_id
from dante.domain.settings import Settings
from dante.schemas import commands as cmd
from dante.schemas import dispatch
from dante.schemas.codec import decode_reply, encode
from dante.schemas.identity import REPLY_HEADER, reply_prefix
from dante.schemas.values import JobRequirements, ScriptPayload
from dante.schemas.views import Balance
from tests.auth.conftest import Secured
from tests.auth.test_isolation import Agent
from tests.funding import fund
from tests.handlers.conftest import Clock

pytestmark = pytest.mark.anyio


@dataclass
class Flood:
    """Requests sent as fast as one connection goes, answers counted by code."""

    nc: NATS
    account: str
    verb: str
    make: type[cmd.Command[Any]]
    sent: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    retry_after_ms: list[int] = field(default_factory=list)

    async def run(self, seconds: float, rate: int) -> None:
        # The platform answers on the account's reply prefix, under the header's token.
        await self.nc.subscribe(f"{reply_prefix(self.account)}.*", cb=self._answer)
        subject = f"dante.cmd.renter.{self.account}.{self.verb}"
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            for _ in range(rate // 20):
                payload = encode(self._command())
                token = f"flood{self.sent:08d}"
                await self.nc.publish(subject, payload, headers={REPLY_HEADER: token})
                self.sent += 1
            await asyncio.sleep(0.05)
        await self.nc.flush()

    def _command(self) -> cmd.Command[Any]:
        if self.make is cmd.SetBudget:
            # A log-writing command any renter may send: each a new cap, so each one that
            # is admitted appends an event (deposits need a payment on chain each).
            return cmd.SetBudget(command_id=new_command_id(), daily=self.sent + 1)
        return cmd.GetBalance(command_id=new_command_id())

    async def _answer(self, msg: Msg) -> None:
        if not msg.subject.rpartition(".")[2].startswith("flood"):
            return  # an answer to the connection's own requests
        reply = decode_reply(msg.data)
        if reply.ok:
            self.answers["ok"] += 1
        else:
            assert reply.error is not None
            self.answers[reply.error.code] += 1
            if reply.error.retry_after_ms is not None:
                self.retry_after_ms.append(reply.error.retry_after_ms)

    @property
    def answered(self) -> int:
        return sum(self.answers.values())

    async def all_answered(self, within: float) -> float:
        started = time.monotonic()
        while self.answered < self.sent:
            if time.monotonic() - started > within:
                raise AssertionError(f"{self.sent - self.answered} of {self.sent} not answered")
            await asyncio.sleep(0.02)
        return time.monotonic() - started


@dataclass
class Bystander:
    """Another account asking its balance every 50 ms, one request at a time."""

    client: Client
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                await self.client.ask(cmd.GetBalance(command_id=new_command_id()))
            except Exception as exc:  # every failure is one: counted, not raised
                self.failures.append(repr(exc))
            self.latencies.append(time.monotonic() - started)
            await asyncio.sleep(0.05)

    def p90(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[int(len(ordered) * 0.9)] if ordered else 0.0


async def _accounts(secured: Secured, *names: str) -> list[NATS]:
    connections = []
    for name in names:
        await secured.sign_up(name, f"{name}-pass")
        connections.append(await secured.login(name, f"{name}-pass"))
    return connections


async def test_a_flood_of_queries_is_refused_while_other_accounts_are_served(
    secured: Secured,
) -> None:
    mallory, alice, dave = await _accounts(secured, "mallory", "alice", "dave")
    settings = secured.platform.options.settings
    # Bystanders that give up after 5 s and never retry: before admission, a flood like this
    # left them unanswered for minutes.
    others = [Bystander(Client(nc, "renter", name, timeout=5, tries=1)) for nc, name in
              ((alice, "alice"), (dave, "dave"))]  # fmt: skip
    flood = Flood(mallory, "mallory", "balance", cmd.GetBalance)
    stop = asyncio.Event()
    watching = [asyncio.create_task(b.run(stop)) for b in others]
    seconds = 4.0
    started = time.monotonic()
    await flood.run(seconds, rate=2000)
    elapsed = time.monotonic() - started
    # No backlog: everything the flood sent is answered at once, most of it refused.
    drained = await flood.all_answered(within=10)
    await asyncio.sleep(1.0)  # and the others keep being served right after it
    stop.set()
    await asyncio.gather(*watching)

    admitted = settings.request_burst + settings.request_rate * (elapsed + drained + 1)
    assert flood.answers["ok"] <= admitted
    assert flood.answers["rate_limited"] >= flood.sent - admitted
    assert set(flood.answers) == {"ok", "rate_limited"}
    assert all(0 < ms <= 1000 for ms in flood.retry_after_ms)
    for bystander in others:
        assert bystander.failures == []
        assert len(bystander.latencies) > 20
    await secured.audit_clean()


async def test_a_flood_of_writes_appends_only_what_the_write_bucket_admits(
    secured: Secured,
) -> None:
    mallory, alice = await _accounts(secured, "mallory", "alice")
    settings = secured.platform.options.settings
    bank = Client(alice, "renter", "alice", timeout=5, tries=1)
    await fund(bank, 5)
    before = await secured.platform.store.last_seq()
    flood = Flood(mallory, "mallory", "budget", cmd.SetBudget)
    started = time.monotonic()
    await flood.run(3.0, rate=1000)
    drained = await flood.all_answered(within=20)
    elapsed = time.monotonic() - started
    # Another account's write goes through at once: its bucket is its own.
    await bank.ask(cmd.SetBudget(command_id=new_command_id(), daily=5))
    assert (await bank.ask(cmd.GetBalance(command_id=new_command_id()))).available_udgpu == 5

    await secured.platform.settle()
    appended = await secured.platform.store.last_seq() - before
    allowed = settings.write_burst + settings.write_rate * (elapsed + drained)
    assert 0 < flood.answers["ok"] <= allowed
    assert appended == flood.answers["ok"] + 1  # one event a cap, and alice's
    assert flood.answers["rate_limited"] == flood.sent - flood.answers["ok"]
    wallet = secured.platform.tail.world.wallets["mallory"]
    assert wallet.budget_daily is not None and wallet.budget_daily <= flood.sent
    await secured.audit_clean()


@pytest.mark.parametrize("settings", [Settings(request_rate=5, request_burst=1)])
async def test_the_client_waits_out_a_refusal_once(secured: Secured) -> None:
    (mallory,) = await _accounts(secured, "mallory")
    client = Client(mallory, "renter", "mallory", timeout=5, tries=1)
    await client.ask(cmd.GetBalance(command_id=new_command_id()))
    # The bucket is empty: refused, the client waits the 200 ms it is told, and is served.
    started = time.monotonic()
    balance = await client.ask(cmd.GetBalance(command_id=new_command_id()))
    assert isinstance(balance, Balance)
    assert time.monotonic() - started >= 0.15


@pytest.mark.parametrize("settings", [Settings(request_rate=0.1, request_burst=1)])
async def test_refused_again_after_its_retry_the_client_says_how_long_to_wait(
    secured: Secured, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(commands, "MAX_RATE_LIMIT_WAIT_S", 0.3)
    (mallory,) = await _accounts(secured, "mallory")
    client = Client(mallory, "renter", "mallory", timeout=5, tries=1)
    await client.ask(cmd.GetBalance(command_id=new_command_id()))
    with pytest.raises(CommandError) as refused:
        await client.ask(cmd.GetBalance(command_id=new_command_id()))
    assert refused.value.code == "rate_limited"
    wait = refused.value.info.retry_after_ms
    assert wait is not None
    assert 9_000 < wait <= 10_000
    assert f"retry in {wait} ms" in str(refused.value)


async def test_during_a_flood_a_job_is_submitted_placed_and_its_agent_gets_the_instruction(
    secured: Secured, clock: Clock
) -> None:
    mallory, alice = await _accounts(secured, "mallory", "alice")
    await secured.sign_up("bob", "bob-pass", "provider")
    bob = Agent(await secured.login("bob", "bob-pass", machine="prv-b"), "bob", "prv-b")
    await bob.register()
    await bob.beat(clock)
    renter = Client(alice, "renter", "alice", timeout=5, tries=1)
    await fund(renter, 10_000_000)
    flood = asyncio.create_task(
        Flood(mallory, "mallory", "balance", cmd.GetBalance).run(3.0, rate=2000)
    )
    await asyncio.sleep(0.5)  # well into the flood
    job = await renter.ask(
        cmd.SubmitJob(
            command_id=new_command_id(),
            requirements=JobRequirements(gpu_count=1),
            payload=ScriptPayload(script="print(1)"),
        )
    )
    assignment, msg = await bob.next_instruction(secured)
    await bob.client.ask(cmd.AcceptAssignment(command_id=new_command_id(), **bob.ids(job.job_id)))
    assert not flood.done()  # all of it while mallory floods
    assert isinstance(assignment, dispatch.Assignment) and assignment.job_id == job.job_id
    await msg.ack_sync()
    await flood
    await secured.audit_clean()
