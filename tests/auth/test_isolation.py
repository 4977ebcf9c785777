"""Nobody acts as anybody else: renters, providers' agents and the operator against a real
nats-server enforcing the callout's permissions, with the real platform behind it.

Every attempt is refused by the server (a `forbidden` error, at once) or by the command
service, and the log and the balances are the same afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client as NATS
from nats.errors import TimeoutError as NatsTimeout

from dante.client.commands import Client, CommandError, new_command_id, request
from dante.client.connect import connect
from dante.client.credentials import Credential
from dante.events.subjects import (
    CLIENT_API_PREFIX,
    DISPATCH_STREAM,
    agent_consumer_name,
    heartbeat_subject,
)
from dante.schemas import commands as cmd
from dante.schemas import dispatch
from dante.schemas.codec import encode
from dante.schemas.money import cost, fee_of
from dante.schemas.results import SubmitResult
from dante.schemas.statements import JobStatement
from dante.schemas.values import GpuOffer, GpuSample, JobRequirements, ScriptPayload, UsageTick
from tests.auth.conftest import Secured
from tests.factories import NOW, SOLANA, deposit, gpu
from tests.funding import fund
from tests.handlers.conftest import Clock

pytestmark = pytest.mark.anyio

DGPU = 1_000_000
PRICE = 500_000


class Agent:
    """What a provider's agent does, over a connection logged in as `<owner>/<provider_id>`."""

    def __init__(self, nc: NATS, owner: str, provider_id: str) -> None:
        self.nc = nc
        self.owner = owner
        self.provider_id = provider_id
        self.client = Client(nc, "provider", owner, timeout=5)
        self.consumer = agent_consumer_name(owner, provider_id)
        self.sub: Any = None

    async def register(self) -> None:
        await self.client.send(
            cmd.RegisterProvider(
                command_id=new_command_id(),
                provider_id=self.provider_id,
                name=self.provider_id,
                payout_address=SOLANA,
                gpus=[gpu(0)],
                offers=[GpuOffer(index=0, price=PRICE)],
            )
        )

    async def beat(self, clock: Clock, secured: Secured | None = None) -> None:
        """Heartbeat now; with `secured`, wait until liveness heard it."""
        beat = dispatch.Heartbeat(provider_id=self.provider_id, owner=self.owner, at=clock.now)
        ack = await self.nc.jetstream().publish(
            heartbeat_subject(self.owner, self.provider_id), msgspec.json.encode(beat)
        )
        assert ack.seq > 0
        if secured is not None:
            # last_seen may hold clock.now already (liveness expects a provider from its
            # registration on): wait until the watcher has handled this very entry.
            liveness = secured.platform.liveness
            for _ in range(500):
                if liveness.handled >= ack.seq and liveness.last_seen.get(self.provider_id) == (
                    clock.now
                ):
                    return
                await asyncio.sleep(0.01)
            raise AssertionError("liveness did not hear the heartbeat")

    async def next_instruction(self, secured: Secured) -> tuple[dispatch.Instruction, Any]:
        if self.sub is None:
            # The platform makes the consumer when the provider registers; the agent binds.
            js = secured.platform.nc.jetstream()
            for _ in range(200):
                try:
                    await js.consumer_info(DISPATCH_STREAM, self.consumer)
                    break
                except Exception:
                    await asyncio.sleep(0.02)
            api = self.nc.jetstream(prefix=CLIENT_API_PREFIX)
            self.sub = await api.pull_subscribe_bind(durable=self.consumer, stream=DISPATCH_STREAM)
        (msg,) = await self.sub.fetch(1, timeout=5)
        return msgspec.json.decode(msg.data, type=dispatch.Instruction), msg

    def ids(self, job_id: str) -> dict[str, Any]:
        return {"provider_id": self.provider_id, "job_id": job_id, "attempt": 1}


async def refusal_code(call: Awaitable[Any]) -> str | None:
    try:
        await call
    except CommandError as error:
        return error.code
    return None


async def forbidden(call: Awaitable[Any]) -> None:
    with pytest.raises(CommandError) as caught:
        await call
    assert caught.value.code == "forbidden", caught.value.info


async def rejected(call: Awaitable[Any], code: str) -> None:
    with pytest.raises(CommandError) as caught:
        await call
    assert caught.value.code == code, caught.value.info


async def refused(nc: NATS, subject: str, payload: bytes = b"{}") -> None:
    """The server refuses `nc` publishing to `subject` (whatever it would have done)."""
    await forbidden(request(nc, subject, payload, timeout=3))


def submit(**requirements: Any) -> cmd.SubmitJob:
    return cmd.SubmitJob(
        command_id=new_command_id(),
        requirements=JobRequirements(**requirements),
        payload=ScriptPayload(script="print(1)"),
    )


@pytest.fixture
async def market(secured: Secured, clock: Clock) -> dict[str, Any]:
    """alice and dave rent; bob and carol each run a machine; alice's job runs on bob's."""
    await secured.sign_up("alice", "alice-pass")
    await secured.sign_up("dave", "dave-pass")
    await secured.sign_up("bob", "bob-pass-1", "provider")
    await secured.sign_up("carol", "carol-pass", "provider")
    alice = await secured.login("alice", "alice-pass")
    dave = await secured.login("dave", "dave-pass")
    bob = Agent(await secured.login("bob", "bob-pass-1", machine="prv-b"), "bob", "prv-b")
    carol = Agent(await secured.login("carol", "carol-pass", machine="prv-c"), "carol", "prv-c")
    await bob.register()
    await bob.beat(clock)
    await fund(Client(alice, "renter", "alice"), 10 * DGPU)
    await fund(Client(dave, "renter", "dave"), 10 * DGPU)
    job = await Client(alice, "renter", "alice").send(submit(), SubmitResult)
    await secured.platform.settle()
    assignment, msg = await bob.next_instruction(secured)
    assert isinstance(assignment, dispatch.Assignment) and assignment.job_id == job.job_id
    await msg.ack_sync()
    await carol.register()
    await secured.platform.settle()
    return {"alice": alice, "dave": dave, "bob": bob, "carol": carol, "job": job.job_id}


async def test_an_agent_does_its_whole_job_with_only_its_own_permissions(
    secured: Secured, market: dict[str, Any], clock: Clock
) -> None:
    bob: Agent = market["bob"]
    job_id = market["job"]
    await bob.client.send(cmd.AcceptAssignment(command_id=new_command_id(), **bob.ids(job_id)))
    await bob.client.send(cmd.ReportJobStarted(command_id=new_command_id(), **bob.ids(job_id)))
    clock.advance(12)
    tick = UsageTick(seq=1, ended_at=NOW, samples=[GpuSample(index=0, gpu_ms=10_000)])
    await bob.client.send(
        cmd.RecordUsage(command_id=new_command_id(), ticks=[tick], **bob.ids(job_id))
    )
    await bob.client.send(
        cmd.ReportJobFinished(command_id=new_command_id(), exit_code=0, **bob.ids(job_id))
    )
    await secured.platform.settle()
    world = secured.platform.tail.world
    charged = cost(PRICE, 10_000)
    assert world.job(job_id).status == "completed"
    assert world.wallet("alice").available == 10 * DGPU - charged
    assert world.wallet("bob").available == charged - fee_of(charged, 500)
    # A provider may ask about its own wallet (whether this branch serves the query or not).
    balance = Client(bob.nc, "renter", "bob", timeout=3).send(cmd.GetBalance())
    assert await refusal_code(balance) != "forbidden"
    # The job's statement: a provider account asks as a renter would (the CLI need not know
    # the account's role) and gets the renter's; one that never ran it gets nothing.
    statement = cmd.GetJobStatement(job_id=job_id)
    renters = await Client(market["alice"], "renter", "alice").send(statement, JobStatement)
    providers = await Client(bob.nc, "renter", "bob", timeout=3).send(statement, JobStatement)
    assert providers.digest == renters.digest and providers.attempts[0].provider_owner == "bob"
    carol: Agent = market["carol"]
    await rejected(Client(carol.nc, "renter", "carol", timeout=3).send(statement), "unknown_job")


async def test_a_renter_cannot_act_or_read_as_another_renter(
    secured: Secured, market: dict[str, Any]
) -> None:
    dave: NATS = market["dave"]
    job_id = market["job"]
    before = await secured.snapshot()
    as_alice = Client(dave, "renter", "alice", timeout=3)
    await forbidden(as_alice.send(submit()))
    await forbidden(as_alice.send(cmd.CancelJob(command_id=new_command_id(), job_id=job_id)))
    await forbidden(as_alice.send(cmd.Deposit(command_id=new_command_id(), amount=DGPU)))
    await forbidden(as_alice.send(cmd.GetJob(job_id=job_id)))
    await forbidden(as_alice.send(cmd.GetJobLogs(job_id=job_id)))
    await forbidden(as_alice.send(cmd.DownloadResults(job_id=job_id)))
    await forbidden(as_alice.send(cmd.GetBalance()))
    await forbidden(as_alice.send(cmd.GetWalletHistory()))
    # Through its own subjects, naming alice's job: the command service refuses.
    own = Client(dave, "renter", "dave", timeout=3)
    await rejected(
        own.send(cmd.CancelJob(command_id=new_command_id(), job_id=job_id)), "unknown_job"
    )
    # Nor may a renter act as a provider, or as the operator.
    await forbidden(
        Client(dave, "provider", "dave", timeout=3).send(
            cmd.DeregisterProvider(command_id=new_command_id(), provider_id="prv-b")
        )
    )
    await forbidden(Client(dave, "operator", "operator", timeout=3).send(cmd.GetPlatformStatus()))
    assert await secured.snapshot() == before


async def test_a_provider_cannot_act_for_another_provider(
    secured: Secured, market: dict[str, Any]
) -> None:
    bob: Agent = market["bob"]
    carol: Agent = market["carol"]
    job_id = market["job"]
    before = await secured.snapshot()
    as_bob = Client(carol.nc, "provider", "bob", timeout=3)
    registration = cmd.RegisterProvider(
        command_id=new_command_id(),
        provider_id="prv-b",
        name="mine now",
        payout_address=SOLANA,
        gpus=[gpu(0)],
        offers=[GpuOffer(index=0, price=1)],
    )
    await forbidden(as_bob.send(registration))
    tick = UsageTick(seq=1, ended_at=NOW, samples=[GpuSample(index=0, gpu_ms=3_600_000)])
    await forbidden(
        as_bob.send(cmd.RecordUsage(command_id=new_command_id(), ticks=[tick], **bob.ids(job_id)))
    )
    await forbidden(
        as_bob.send(cmd.ReportJobFinished(command_id=new_command_id(), **bob.ids(job_id)))
    )
    await forbidden(as_bob.send(cmd.Withdraw(command_id=new_command_id(), amount=DGPU)))
    # Through carol's own subjects: bob's machine and bob's job are not hers.
    await rejected(carol.client.send(registration), "not_your_provider")
    await rejected(
        carol.client.send(
            cmd.RecordUsage(command_id=new_command_id(), ticks=[tick], **bob.ids(job_id))
        ),
        "not_your_provider",
    )
    await rejected(
        carol.client.send(cmd.ReportJobFinished(command_id=new_command_id(), **bob.ids(job_id))),
        "not_your_provider",
    )
    await rejected(
        carol.client.send(
            cmd.RecordUsage(command_id=new_command_id(), ticks=[tick], **carol.ids(job_id))
        ),
        "unknown_job",
    )
    assert await secured.snapshot() == before


async def test_a_provider_cannot_read_or_redirect_another_providers_instructions(
    secured: Secured, market: dict[str, Any], clock: Clock
) -> None:
    bob: Agent = market["bob"]
    carol: Agent = market["carol"]
    # A job for carol's machine: bob's is busy with alice's.
    await Client(market["dave"], "renter", "dave").send(submit())
    await secured.platform.settle()
    js = secured.platform.nc.jetstream()
    pending = (await js.consumer_info(DISPATCH_STREAM, carol.consumer)).num_pending
    assert pending == 1
    api = CLIENT_API_PREFIX
    # Pull from carol's consumer, create one on her subjects, or on everything.
    await refused(bob.nc, f"{api}.CONSUMER.MSG.NEXT.{DISPATCH_STREAM}.{carol.consumer}")
    await refused(bob.nc, f"$JS.API.CONSUMER.MSG.NEXT.{DISPATCH_STREAM}.{carol.consumer}")
    for prefix in (api, "$JS.API"):
        await refused(bob.nc, f"{prefix}.CONSUMER.CREATE.{DISPATCH_STREAM}.spy.dante.agent.carol.>")
        await refused(bob.nc, f"{prefix}.CONSUMER.CREATE.{DISPATCH_STREAM}")
        await refused(bob.nc, f"{prefix}.CONSUMER.DELETE.{DISPATCH_STREAM}.{carol.consumer}")
        await refused(bob.nc, f"{prefix}.CONSUMER.INFO.{DISPATCH_STREAM}.{carol.consumer}")
    # Binding to it gets nothing: every fetch is refused.
    sub = await bob.nc.jetstream(prefix=api).pull_subscribe_bind(
        durable=carol.consumer, stream=DISPATCH_STREAM
    )
    with pytest.raises(NatsTimeout):
        await sub.fetch(1, timeout=1)
    # Nor read the dispatch stream directly, nor ack carol's messages.
    await refused(bob.nc, f"{api}.DIRECT.GET.{DISPATCH_STREAM}", encode({"seq": 1}))
    await refused(bob.nc, f"$JS.ACK.{DISPATCH_STREAM}.{carol.consumer}.1.2.1.1.0")
    info = await js.consumer_info(DISPATCH_STREAM, carol.consumer)
    assert (info.num_pending, info.num_ack_pending, info.delivered.stream_seq) == (1, 0, 0)
    # Carol's agent gets it.
    instruction, _ = await carol.next_instruction(secured)
    assert isinstance(instruction, dispatch.Assignment)


async def test_heartbeats_only_for_ones_own_machines(
    secured: Secured, market: dict[str, Any], clock: Clock
) -> None:
    bob: Agent = market["bob"]
    carol: Agent = market["carol"]
    await refused(bob.nc, heartbeat_subject("carol", "prv-c"))
    await refused(bob.nc, heartbeat_subject("bob", "prv-other"))
    # bob logged in for a machine named like carol's: its beats are under bob's key, and do
    # not keep carol's machine alive.
    spoof = Agent(await secured.login("bob", "bob-pass-1", machine="prv-c"), "bob", "prv-c")
    await carol.beat(clock, secured)
    clock.advance(secured.platform.options.settings.offline_after_s + 1)
    await spoof.beat(clock)
    await bob.beat(clock, secured)  # heard after the spoofed beat: one watcher, in order
    assert secured.platform.liveness.last_seen["prv-c"] < clock.now
    await secured.platform.tick()
    await secured.platform.settle()
    world = secured.platform.tail.world
    assert world.provider("prv-c").status == "offline"
    assert world.provider("prv-b").status != "offline"


async def test_nobody_writes_the_log_or_touches_its_configuration(
    secured: Secured, market: dict[str, Any]
) -> None:
    operator = await secured.operator()
    bob: Agent = market["bob"]
    before = await secured.snapshot()
    forged = encode(deposit("dave", 1000))
    for nc in (market["dave"], bob.nc, operator):
        await refused(nc, "dante.evt.wallet.dave", forged)
        await refused(nc, "dante.agent.bob.prv-b.job-x", b"{}")
        for prefix in ("$JS.API", CLIENT_API_PREFIX):
            for verb in ("DELETE", "PURGE", "UPDATE", "CREATE"):
                await refused(nc, f"{prefix}.STREAM.{verb}.DANTE")
            await refused(nc, f"{prefix}.STREAM.MSG.DELETE.DANTE", encode({"seq": 1}))
            await refused(nc, f"{prefix}.CONSUMER.CREATE.DANTE")
            await refused(nc, f"{prefix}.CONSUMER.DELETE.DANTE.scheduler")
        await refused(nc, "$KV.dante_accounts.dave", b"{}")
        await refused(nc, "$SYS.REQ.USER.AUTH", b"")
    assert await secured.snapshot() == before


async def test_jetstream_answers_cannot_be_steered_into_the_log(
    secured: Secured, market: dict[str, Any], clock: Clock
) -> None:
    # Within one account JetStream would publish its acknowledgement to whatever reply
    # subject a client names, the log's subjects included. Across nats.conf's service
    # imports the server answers on its own reply subjects, so nothing lands in the log.
    bob: Agent = market["bob"]
    operator = await secured.operator()
    before = await secured.snapshot()
    beat = msgspec.json.encode(dispatch.Heartbeat(provider_id="prv-b", owner="bob", at=clock.now))
    await bob.nc.publish(heartbeat_subject("bob", "prv-b"), beat, reply="dante.evt.wallet.bob")
    await bob.nc.publish(
        f"{CLIENT_API_PREFIX}.CONSUMER.MSG.NEXT.{DISPATCH_STREAM}.{bob.consumer}",
        b'{"batch": 1}',
        reply="dante.evt.wallet.bob",
    )
    await bob.nc.publish(
        "dante.cmd.provider.bob.deregister", b"{}", reply="dante.evt.provider.prv-b"
    )
    await operator.publish(
        f"{CLIENT_API_PREFIX}.DIRECT.GET.DANTE", encode({"seq": 1}), reply="dante.evt.wallet.x"
    )
    await operator.publish("$SRV.PING", b"", reply="dante.evt.wallet.y")
    for nc in (bob.nc, operator):
        await nc.flush()
    await asyncio.sleep(0.5)
    assert await secured.snapshot() == before


async def test_the_platforms_answers_go_only_to_the_callers_own_prefix(
    secured: Secured, market: dict[str, Any]
) -> None:
    # mallory (dave here) names alice's inbox as the reply subject of her own requests: the
    # platform never answers to a reply subject from outside its account (it sees only the
    # server's `_R_…` stand-in for it), so alice hears nothing. With a token in the header
    # (the way clients ask), dave's answer comes to dave's own prefix, whatever reply he named.
    alice: NATS = market["alice"]
    dave: NATS = market["dave"]
    heard: list[str] = []
    own: list[str] = []

    async def hear(msg: Any) -> None:
        heard.append(msg.subject)

    async def keep(msg: Any) -> None:
        own.append(msg.subject)

    for subject in ("_INBOX_alice.>", "dante.reply.alice.>"):
        await alice.subscribe(subject, cb=hear)
    await dave.subscribe("dante.reply.dave.*", cb=keep)
    for nc in (alice, dave):
        await nc.flush()
    balance = encode(cmd.GetBalance())
    await dave.publish("dante.cmd.renter.dave.balance", balance, reply="_INBOX_alice.x")
    await dave.publish(
        "dante.cmd.renter.dave.balance",
        balance,
        reply="_INBOX_alice.y",
        headers={"Dante-Reply": "token-of-dave-1"},
    )
    await dave.publish("dante.acct.dave.logout", b"{}", reply="_INBOX_alice.z")
    answered = await request(dave, "dante.cmd.renter.dave.balance", balance, timeout=5)
    assert answered.subject.startswith("dante.reply.dave.")
    await asyncio.sleep(0.5)
    assert heard == []
    assert "dante.reply.dave.token-of-dave-1" in own
    # Nor may dave listen where alice's answers arrive.
    errors: list[Exception] = []

    async def collect(error: Exception) -> None:
        errors.append(error)

    spy = await connect(
        secured.url,
        name="spy",
        credential=Credential(username="dave", secret="dave-pass"),
        error_cb=collect,
    )
    try:
        await spy.subscribe("dante.reply.alice.>")
        await spy.flush()
        await asyncio.sleep(0.2)
        assert any("permissions violation for subscription" in str(e).lower() for e in errors)
    finally:
        await spy.close()
    await secured.audit_clean()
