"""The stream leader of a three-node cluster killed under load, as real processes.

The platform runs as the README says (`dante up --nats-url A,B,C --replicas 3` and `dante
serve handlers`) on nodes started from `dante cluster init`'s configurations, with the demo
provider running a renter's job. Renters deposit without pause, each deposit a new command
through the real command client; the nats-server holding the leader of the log's stream is
killed (SIGKILL), the load goes on, the node is started again and must rejoin. What it
measures: the longest time with no write acknowledged (the stall), and every deposit's
fate: each renter's balance must be exactly what was acknowledged to it (nothing lost,
nothing applied twice). Used by tests/test_failover.py (which asserts) and
bench/failover.py (which reports).
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from solders.keypair import Keypair

from dante.client.commands import Client, new_command_id
from dante.client.connect import connect
from dante.client.credentials import Credential, platform_credential
from dante.client.payments import faucet, pay_deposit
from dante.events.subjects import STREAM
from dante.schemas.commands import GetBalance
from dante.services.auth.installation import InstallationSecrets
from tests.cli.cli import run_dante
from tests.cli.platform_proc import UpProcess, environment
from tests.cluster_proc import Cluster, ServeProcess

RENTERS = 4
JOB = "import time\nfor i in range(40):\n    print('step', i, flush=True)\n    time.sleep(1)\n"


@dataclass
class Outcome:
    """What the load saw."""

    #: When each acknowledged write came back (monotonic seconds), in order.
    acked: list[float] = field(default_factory=list)
    #: How long each acknowledged write took, from its send to its answer.
    latencies: list[float] = field(default_factory=list)
    #: Per renter: the sum of the deposits acknowledged; and the balance found after.
    deposited: dict[str, int] = field(default_factory=dict)
    balances: dict[str, int] = field(default_factory=dict)
    #: Writes that failed (the client gave up): each a lost command.
    failed: list[str] = field(default_factory=list)
    killed_at: float = 0.0
    #: How the node was stopped: SIGKILL (a crash) or SIGTERM (an orderly stop).
    how: str = "SIGKILL"
    killed: str = ""
    #: Seconds from the kill to the first node saying it leads the stream now (its log).
    elected_s: float | None = None
    leader_after: str = ""
    #: Seconds from the killed node's restart to its being a current replica again.
    rejoined_s: float = 0.0
    job_state: str = ""
    audit: dict[str, object] = field(default_factory=dict)
    #: What `dante up` said, for a failure's report.
    platform_log: str = ""

    @property
    def stall_s(self) -> float:
        """The longest time between two acknowledged writes, over the whole load."""
        return max((b - a for a, b in zip(self.acked, self.acked[1:], strict=False)), default=0.0)

    @property
    def slowest_s(self) -> float:
        """The longest one write waited for its answer (the worst a single client saw)."""
        return max(self.latencies, default=0.0)

    @property
    def writes(self) -> int:
        return len(self.acked)

    def summary(self) -> dict[str, object]:
        return {
            "how": self.how,
            "killed": self.killed,
            "elected_s": None if self.elected_s is None else round(self.elected_s, 2),
            "new_leader": self.leader_after,
            "stall_s": round(self.stall_s, 2),
            "slowest_s": round(self.slowest_s, 2),
            "writes": self.writes,
            "failed": len(self.failed),
            "rejoined_s": round(self.rejoined_s, 2),
            "balances_match": self.balances == self.deposited,
            "job": self.job_state,
            "audit_ok": self.audit.get("ok"),
        }


async def _renter(urls: str, name: str, password: str, outcome: Outcome, stop: anyio.Event) -> None:
    credential = Credential(username=name, secret=password, role="renter")
    nc = await connect(urls, name=f"load-{name}", credential=credential, forever=True)
    client = Client(nc, "renter", name)
    outcome.deposited[name] = 0
    # Deposits are payments: test dGPU from the local chain's faucet, each deposit a transfer
    # signed from this keypair and credited once the platform has verified it on chain.
    keypair = Keypair()
    await faucet(client, str(keypair.pubkey()), 1_000 * 1_000_000)
    try:
        while not stop.is_set():
            amount = random.randint(1, 1000)
            sent = time.monotonic()
            try:
                await pay_deposit(client, keypair, amount, command_id=new_command_id())
            except Exception as exc:  # every failure is a lost command
                outcome.failed.append(f"{name}: {exc!r}")
                continue
            outcome.deposited[name] += amount
            outcome.acked.append(time.monotonic())
            outcome.latencies.append(outcome.acked[-1] - sent)
            await anyio.sleep(0.02)
        outcome.balances[name] = (await client.ask(GetBalance())).available_udgpu
    finally:
        await nc.close()


async def _stream_leader(urls: str, password: str) -> str:
    nc = await connect(urls, name="probe", credential=platform_credential(password))
    try:
        info = await nc.jetstream().stream_info(STREAM)
        assert info.cluster is not None and info.cluster.leader
        return info.cluster.leader
    finally:
        await nc.close()


async def _current_replicas(urls: str, password: str) -> set[str]:
    nc = await connect(urls, name="probe", credential=platform_credential(password))
    try:
        info = await nc.jetstream().stream_info(STREAM)
        assert info.cluster is not None
        peers = {peer.name for peer in info.cluster.replicas or [] if peer.current and peer.name}
        leader = info.cluster.leader
        return peers | ({leader} if leader else set())
    finally:
        await nc.close()


def outcome_signal(outcome: Outcome) -> signal.Signals:
    return signal.Signals[outcome.how]


async def kill_the_stream_leader(
    tmp_path: Path,
    *,
    sig: signal.Signals = signal.SIGKILL,
    before_s: float = 5.0,
    after_s: float = 12.0,
) -> Outcome:
    """Run the whole scenario in `tmp_path`, stopping the leader's node with `sig`; what it
    saw."""
    cluster = Cluster.init(tmp_path / "data", env=environment())
    cluster.start_all()
    outcome = Outcome(how=sig.name)
    env = {
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        # FAILOVER_LOG_LEVEL=info keeps the platform's whole story (in `platform_log`).
        "LOG_LEVEL": os.environ.get("FAILOVER_LOG_LEVEL", "warning"),
    }
    try:
        up = UpProcess(
            cluster.data_dir, None, "--nats-url", cluster.urls, "--replicas", "3", "--demo",
            env=env, nats_url=cluster.urls,
        ).start(timeout=180)  # fmt: skip
        try:
            serve = ServeProcess(cluster.urls, cluster.data_dir, environment(env))
            try:
                await _scenario(tmp_path, cluster, up, env, outcome, before_s, after_s)
            finally:
                serve.stop()
        finally:
            up.stop()
            outcome.platform_log = "".join(up.output)
            (tmp_path / "up.log").write_text(outcome.platform_log)
    finally:
        cluster.stop()
    return outcome


async def _scenario(
    tmp_path: Path,
    cluster: Cluster,
    up: UpProcess,
    env: dict[str, str],
    outcome: Outcome,
    before_s: float,
    after_s: float,
) -> None:
    password = InstallationSecrets.load_or_create(cluster.data_dir).platform_password
    renters = {f"renter-{i}": f"renter-secret-{i}" for i in range(RENTERS)}
    for name, secret in renters.items():
        created = up.dante(
            "account", "create", "--role", "renter", DANTE_USERNAME=name, DANTE_PASSWORD=secret
        )
        assert created.returncode == 0, created.stderr
    # A job running on the demo provider: its agent reports usage through the failover.
    demo = {**env, "DANTE_PASSWORD": "demo-pass"}
    (tmp_path / "job.py").write_text(JOB)
    ran = run_dante(
        "jobs", "submit", "--json", "--script", str(tmp_path / "job.py"), "--max-hours", "0.1",
        url=cluster.urls, user="demo-user", env=demo,
    )  # fmt: skip
    assert ran.code == 0, ran
    job_id = ran.json()["job_id"]

    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        for name, secret in renters.items():
            tg.start_soon(_renter, cluster.urls, name, secret, outcome, stop)
        await anyio.sleep(before_s)
        outcome.killed = await _stream_leader(cluster.urls, password)
        victim = cluster.node(outcome.killed)
        outcome.killed_at = time.monotonic()
        killed_wall = time.time()
        cluster.kill(victim, outcome_signal(outcome))
        await anyio.sleep(after_s)
        outcome.leader_after = await _stream_leader(cluster.urls, password)
        after = [t for t in cluster.elections(STREAM) if t >= killed_wall - 0.01]
        outcome.elected_s = after[0] - killed_wall if after else None
        restarted = time.monotonic()
        cluster.start(victim)
        with anyio.fail_after(60):
            while victim.name not in await _current_replicas(cluster.urls, password):
                await anyio.sleep(0.2)
        outcome.rejoined_s = time.monotonic() - restarted
        await anyio.sleep(2.0)  # writes with the node back
        stop.set()

    ran = run_dante(
        "jobs", "wait", job_id, "--timeout", "120", "--json",
        url=cluster.urls, user="demo-user", env=demo, timeout=180,
    )  # fmt: skip
    outcome.job_state = ran.json()["state"] if ran.code == 0 else f"wait failed: {ran}"
    audit = run_dante(
        "audit", "--json", "--data-dir", str(cluster.data_dir), url=cluster.urls, env=env
    )
    outcome.audit = json.loads(audit.out) if audit.out else {"ok": False, "error": audit.err}
