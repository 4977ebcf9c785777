"""`dante agent run`: the provider's daemon.

It registers this machine (again, after a restart: the provider id lives in the work
directory), heartbeats, takes its assignments from its own durable consumer and runs each as
an `Attempt`. On start it first settles what a previous run left: job processes and
containers that outlived it are killed, attempts that were running are given back to the
platform (`interrupted`), finished ones are reported. On SIGTERM or SIGINT it stops taking
work, lets running jobs finish within the drain timeout, stops the rest and gives them back,
deletes its heartbeat and exits 0; a second signal skips the wait. Its connection is a
`Link`: when nats-py gives up on one (a refused reconnect, as while the platform restarts),
a new one is opened and everything carries on over it.
"""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final

import anyio
import structlog

from dante import __version__
from dante.agent import orphans
from dante.agent.attempt import (
    SHUTDOWN,
    SHUTDOWN_ERROR,
    Attempt,
    AttemptDeps,
    job_dir,
)
from dante.agent.config import AgentConfig
from dante.agent.executors import RunSpec
from dante.agent.executors.sandbox import SandboxUnavailable, protect_agent_process
from dante.agent.heartbeat import Heartbeats
from dante.agent.identity import locked_work_dir, provider_id_for
from dante.agent.instructions import consume
from dante.agent.journal import RAN, AttemptRecord, Journal, Key, Outcome
from dante.agent.link import Link, Opener
from dante.agent.sending import Backoff, Unreachable, attempt_call
from dante.agent.setup import (
    Executors,
    Limits,
    SetupError,
    build_executors,
    machine_memory_mb,
    script_sandbox,
    telemetry_for,
)
from dante.agent.stats import AgentStats
from dante.agent.transfers import CommandTransfers, Transfers
from dante.client.commands import CommandError, new_command_id
from dante.client.credentials import Credential, stored_login
from dante.domain.pricing import suggest_gpu_price
from dante.schemas import commands as cmd
from dante.schemas.dispatch import Assignment, Instruction, Stop
from dante.schemas.values import DockerPayload, Gpu, GpuOffer

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

    from dante.agent.metrics import AgentMetrics

log = structlog.get_logger(__name__)

JOURNAL_FILE: Final = "journal.sqlite3"
JOBS_DIR: Final = "jobs"
RESTART_ERROR: Final = (
    "the provider's agent stopped unexpectedly while the job ran; it was given back to run again"
)
#: After the drain: how long stopped jobs get to end, beyond their own stop grace.
STOP_MARGIN_S: Final = 10.0
#: After the jobs ended: how long their last reports may take before the agent exits anyway
#: (whatever is left is in the journal and sent at the next start).
FLUSH_S: Final = 30.0
HURRIED_FLUSH_S: Final = 5.0
#: Done attempts are forgotten after this long.
JOURNAL_KEEP: Final = timedelta(days=30)


class AgentFailure(Exception):
    """The agent cannot go on (registration refused, ...); the message says why."""


@dataclass(frozen=True, slots=True)
class Machine:
    """What the daemon serves with: settings, GPUs, and where it keeps its state."""

    config: AgentConfig
    gpus: tuple[Gpu, ...]
    provider_id: str

    @property
    def jobs_dir(self) -> Path:
        return self.config.work_dir / JOBS_DIR

    @property
    def simulated(self) -> bool:
        return any(gpu.simulated for gpu in self.gpus)

    def offers(self, *, available: bool = True) -> list[GpuOffer]:
        price = self.config.price
        return [
            GpuOffer(
                index=gpu.index,
                price=suggest_gpu_price(gpu).total if price is None else price,
                available=available,
            )
            for gpu in self.gpus
        ]


class Agent:
    """One provider machine's daemon over its link to the platform (or a connection that
    somebody else keeps open)."""

    def __init__(
        self,
        machine: Machine,
        nc: NATS | Link,
        journal: Journal,
        *,
        executors: Executors | None = None,
        transfers: Transfers | None = None,
        api_prefix: str | None = None,
        stats: AgentStats | None = None,
    ) -> None:
        self.machine = machine
        self.stats = stats or AgentStats()
        config = machine.config
        self.link = nc if isinstance(nc, Link) else Link.fixed(nc)
        self.journal = journal
        #: Where this connection reaches the JetStream API (through the platform's imports
        #: when logged in as an account).
        self.api_prefix = api_prefix or self.link.api_prefix
        self.client = self.link.client("provider", config.owner, timeout=5, tries=2)
        self.executors = executors or build_executors(
            config.executor,
            agent_id=machine.provider_id,
            on_spawn=pgid_recorder(journal),
            sandbox=script_sandbox(config),
        )
        self.telemetry = telemetry_for(machine.gpus)
        self.deps = AttemptDeps(
            provider_id=machine.provider_id,
            journal=journal,
            client=self.client,
            transfers=transfers or CommandTransfers(self.client, machine.provider_id),
            executor=self.executors.executor,
            telemetry=self.telemetry,
            jobs_dir=machine.jobs_dir,
            tick_s=config.tick_s,
            request_gpus=not machine.simulated,
            stop_grace_s=config.stop_grace_s,
            limits=Limits(
                memory_mb=config.memory_limit_mb,
                cpus=config.cpu_limit,
                machine_memory_mb=machine_memory_mb(),
                machine_cpus=_cpus(),
                machine_gpus=len(machine.gpus),
            ),
            pause=self.link.pause,
            stats=self.stats,
        )
        self.heartbeats = Heartbeats(
            self.link.jetstream,
            config.owner,
            machine.provider_id,
            self.running_jobs,
            pause=self.link.pause,
        )
        self.attempts: dict[Key, Attempt] = {}
        self.draining = False
        self.ready = anyio.Event()
        self.log = log.bind(provider_id=machine.provider_id)
        self._jobs: anyio.abc.TaskGroup | None = None

    # ── state ───────────────────────────────────────────────────────────────────────────

    @property
    def nc(self) -> NATS:
        """The connection of the moment."""
        return self.link.nc

    def running_jobs(self) -> list[str]:
        return sorted({a.job_id for a in self.attempts.values() if a.running})

    # ── the whole life ──────────────────────────────────────────────────────────────────

    async def run(self, stopping: anyio.Event, hurry: anyio.Event | None = None) -> None:
        """Serve until `stopping` is set, then shut down gracefully (`hurry` cuts the drain)."""
        hurry = hurry or anyio.Event()
        # Local first: orphans of a crash are killed without waiting for the platform.
        recovered = await self._recover()
        await self._register(stopping)
        if stopping.is_set():
            self.telemetry.close()
            self.log.info("agent stopped before registering")
            return
        async with anyio.create_task_group() as services:
            services.start_soon(self.heartbeats.run)
            async with anyio.create_task_group() as jobs:
                self._jobs = jobs
                for record in recovered:
                    self._start(record)
                consuming = anyio.CancelScope()
                jobs.start_soon(self._consume, consuming)
                self.ready.set()
                self.log.info(
                    "agent ready",
                    gpus=len(self.machine.gpus),
                    simulated=self.machine.simulated,
                    executor=self.executors.kind,
                    work_dir=str(self.machine.config.work_dir),
                    recovered=len(recovered),
                )
                await stopping.wait()
                await self._drain(hurry)
                consuming.cancel()
                jobs.cancel_scope.cancel()
            services.cancel_scope.cancel()
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            try:
                if self.link.is_connected:
                    await self.heartbeats.clear()
                else:
                    self.log.info("heartbeat not deleted: the platform is unreachable")
            except Exception as exc:
                self.log.warning("heartbeat not deleted", error=repr(exc))
        self.telemetry.close()
        self.log.info("agent stopped")

    async def _register(self, stopping: anyio.Event) -> None:
        machine, config = self.machine, self.machine.config
        command = cmd.RegisterProvider(
            command_id=new_command_id(),
            provider_id=machine.provider_id,
            name=config.name,
            location=config.location,
            payout_address=config.wallet,
            gpus=list(machine.gpus),
            offers=machine.offers(),
            host=config.host,
            agent_version=__version__,
        )
        backoff = Backoff(ceiling=10.0)
        while not stopping.is_set():
            try:
                await attempt_call(lambda: self.client.send(command))
            except CommandError as error:
                raise AgentFailure(f"the platform refused the registration: {error}") from None
            except Unreachable as exc:
                self.log.warning("waiting for the platform to register", error=str(exc))
                with anyio.move_on_after(backoff.delay()):
                    await stopping.wait()
                continue
            self.log.info(
                "registered",
                name=config.name,
                gpus=[f"{g.index}: {g.model}" for g in machine.gpus],
                prices=[o.price for o in command.offers],
            )
            return

    async def _recover(self) -> list[AttemptRecord]:
        """Settle what a previous run left behind; the attempts still to carry on."""
        journal = self.journal
        journal.forget_before(JOURNAL_KEEP)
        records = journal.open_attempts()
        for record in records:
            if record.phase not in RAN:
                continue
            work_dir = job_dir(self.machine.jobs_dir, record.job_id, record.attempt)
            if record.pgid is not None and orphans.kill_job_group(record.pgid, work_dir):
                self.log.warning(
                    "killed a job left running", job_id=record.job_id, pgid=record.pgid
                )
            if record.stop_code == "revoked":
                journal.set_phase(record.key, "dropped", note="revoked while the agent was down")
                continue
            # It may have run for a while; its time is metered up to the last journaled tick
            # and the rest is not billed. It must not run again here: give it back.
            journal.record_outcome(
                record.key, Outcome(error=RESTART_ERROR, interrupted=True, upload=False)
            )
            self.log.warning(
                "job was running when the agent stopped; giving it back",
                job_id=record.job_id,
                attempt=record.attempt,
            )
        orphans.kill_strays(self.machine.jobs_dir)
        if self.executors.docker is not None:
            try:
                removed = await self.executors.docker.remove_leftovers()
            except Exception as exc:
                self.log.warning("could not look for leftover containers", error=repr(exc))
            else:
                if removed:
                    self.log.warning("removed containers left by a previous run", ids=removed)
        return journal.open_attempts()

    async def _consume(self, scope: anyio.CancelScope) -> None:
        config = self.machine.config
        with scope:
            await consume(
                lambda: self.link.jetstream(prefix=self.api_prefix),
                config.owner,
                self.machine.provider_id,
                self._on_instruction,
            )

    # ── instructions ────────────────────────────────────────────────────────────────────

    async def _on_instruction(self, instruction: Instruction) -> None:
        match instruction:
            case Assignment():
                await self._on_assignment(instruction)
            case Stop():
                key = (instruction.job_id, instruction.attempt)
                attempt = self.attempts.get(key)
                if attempt is not None:
                    attempt.request_stop(instruction.code, instruction.reason)
                else:
                    self.log.debug("stop for an attempt not running here", job_id=key[0])

    async def _on_assignment(self, assignment: Assignment) -> None:
        key = (assignment.job_id, assignment.attempt)
        # Journaled before the message is acknowledged; an attempt seen before is never
        # run again, whatever state it reached.
        if not self.journal.receive(assignment):
            self.log.info("assignment seen before; ignored", job_id=key[0], attempt=key[1])
            return
        record = self.journal.get(key)
        assert record is not None
        decline = self._why_decline(assignment)
        self.log.info(
            "assignment received",
            job_id=key[0],
            attempt=key[1],
            gpus=assignment.gpu_indices,
            decline=decline or None,
        )
        self._start(record, decline=decline)

    def _why_decline(self, assignment: Assignment) -> str:
        """Why this machine cannot take the assignment now; empty when it can."""
        if self.draining:
            return "the provider's agent is shutting down"
        if isinstance(assignment.payload, DockerPayload) and self.executors.docker is None:
            return "this provider runs scripts only (no Docker engine)"
        ours = {gpu.index for gpu in self.machine.gpus}
        missing = sorted(set(assignment.gpu_indices) - ours)
        if missing:
            return f"GPU {', '.join(map(str, missing))} is not on this machine"
        running = [a for a in self.attempts.values() if a.running]
        for other in running:
            shared = sorted(set(other.gpu_indices) & set(assignment.gpu_indices))
            if shared:
                return f"GPU {', '.join(map(str, shared))} is still busy with job {other.job_id}"
        limit = self.machine.config.max_jobs
        if limit is not None and len(running) >= limit:
            return f"this provider runs at most {limit} job(s) at once"
        return ""

    def _start(self, record: AttemptRecord, *, decline: str = "") -> None:
        assert self._jobs is not None
        attempt = Attempt(self.deps, record, decline=decline)
        self.attempts[record.key] = attempt
        self.stats.attempts_started += 1
        self._jobs.start_soon(self._run_attempt, attempt, name=f"attempt {record.key}")

    async def _run_attempt(self, attempt: Attempt) -> None:
        try:
            await attempt.run()
        except Exception:
            # A bug or a failing disk must not take the other jobs down; the journal keeps
            # the attempt's state for the next start.
            attempt.log.exception("attempt failed")
        finally:
            self.attempts.pop(attempt.key, None)

    # ── shutdown ────────────────────────────────────────────────────────────────────────

    async def _drain(self, hurry: anyio.Event) -> None:
        self.draining = True
        config = self.machine.config
        deadline = anyio.current_time() + config.drain_timeout_s
        running = [a for a in self.attempts.values() if a.running]
        self.log.info(
            "shutting down: no new jobs",
            running=len(running),
            drain_timeout_s=config.drain_timeout_s,
        )
        # Work not begun is given back at once rather than begun and cut short.
        for attempt in running:
            if attempt.unstarted:
                attempt.request_stop(SHUTDOWN, SHUTDOWN_ERROR)
        await self._withdraw_offers()
        if running and not hurry.is_set():
            await _wait_all([a.executed for a in running], config.drain_timeout_s, hurry)
        left = [a for a in self.attempts.values() if a.running]
        for attempt in left:
            attempt.request_stop(SHUTDOWN, SHUTDOWN_ERROR)
        if left:
            self.log.info("stopping jobs still running", jobs=[a.job_id for a in left])
            await _wait_all([a.executed for a in left], config.stop_grace_s + STOP_MARGIN_S)
        # Even in a hurry, the platform should hear that the jobs were given back.
        flush = HURRIED_FLUSH_S if hurry.is_set() else FLUSH_S
        if self.attempts and not self.link.is_connected:
            # Reports wait for a connection that may not come back: no longer than the
            # drain timeout lasts (they are in the journal, for the next start).
            flush = min(flush, max(0.0, deadline - anyio.current_time()))
            self.log.info(
                "the platform is unreachable: reports wait for it until the drain timeout",
                attempts=[f"{job}/{n}" for job, n in self.attempts],
                wait_s=round(flush, 1),
            )
        await _wait_all([a.done for a in list(self.attempts.values())], flush)
        if self.attempts:
            self.log.warning(
                "exiting with reports unsent; they are sent at the next start",
                attempts=[f"{job}/{n}" for job, n in self.attempts],
            )

    async def _withdraw_offers(self) -> None:
        """Ask not to be given new jobs while shutting down (the next start offers again).

        Not while the connection is down: the request would only wait out its timeout.
        """
        if not self.link.is_connected:
            self.log.info("offers not withdrawn: the platform is unreachable")
            return
        command = cmd.UpdateOffer(
            command_id=new_command_id(),
            provider_id=self.machine.provider_id,
            offers=self.machine.offers(available=False),
        )
        with anyio.move_on_after(5):
            try:
                await self.client.send(command)
            except Exception as exc:
                self.log.info("offers not withdrawn", error=repr(exc))


async def _wait_all(
    events: Sequence[anyio.Event], timeout: float, hurry: anyio.Event | None = None
) -> None:
    """Wait until every event is set, `timeout` passes, or `hurry` is set."""
    with anyio.move_on_after(timeout):
        async with anyio.create_task_group() as waiting:
            if hurry is not None:
                waiting.start_soon(_cancel_when, hurry, waiting.cancel_scope)
            for event in events:
                await event.wait()
            waiting.cancel_scope.cancel()


def _cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


async def watch_signals(
    stopping: anyio.Event,
    hurry: anyio.Event,
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """First SIGTERM/SIGINT: shut down gracefully. Second: skip the drain."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for received in signals:
            name = signal.Signals(received).name
            if stopping.is_set():
                log.warning("second signal: stopping jobs now", signal=name)
                hurry.set()
                return
            log.info("signal received: shutting down", signal=name)
            stopping.set()


async def serve(
    config: AgentConfig, gpus: Sequence[Gpu], *, metrics: AgentMetrics | None = None
) -> None:
    """Run the agent until a signal stops it: the work directory held, the journal open,
    connected (and reconnected) to the platform for as long as it takes."""
    with locked_work_dir(config.work_dir):
        provider_id = provider_id_for(config.work_dir, config.owner)
        machine = Machine(config=config, gpus=tuple(gpus), provider_id=provider_id)
        journal = Journal(config.work_dir / JOURNAL_FILE)
        try:
            # Before connecting: a machine that cannot run jobs as asked says so at once.
            # Its jobs run as its own user: they must not read its memory or environment.
            protect_agent_process()
            sandbox = script_sandbox(config)
            try:
                confined = sandbox.abi() > 0
            except SandboxUnavailable as exc:
                raise SetupError(str(exc)) from None
            if confined or sandbox.mode == "off":
                log.info("script sandbox", how=sandbox.describe())
            else:
                log.warning("script jobs are not sandboxed", why=sandbox.describe())
            executors = build_executors(
                config.executor,
                agent_id=provider_id,
                on_spawn=pgid_recorder(journal),
                sandbox=sandbox,
            )
            await until_signalled(
                lambda signals: _serve_connected(machine, journal, executors, signals, metrics)
            )
        finally:
            journal.close()


@dataclass(frozen=True, slots=True)
class Signals:
    """What SIGTERM and SIGINT set: `stopping` the first, `hurry` a second one; `tasks` takes
    helpers that are to end with the serving."""

    stopping: anyio.Event
    hurry: anyio.Event
    tasks: anyio.abc.TaskGroup


async def _serve_connected(
    machine: Machine,
    journal: Journal,
    executors: Executors,
    signals: Signals,
    metrics: AgentMetrics | None = None,
) -> None:
    """Connect (for as long as it takes, unless stopped first) and serve, connecting again
    whenever the connection is lost for good."""
    from dante.client.connect import api_prefix, connect

    config = machine.config
    credential = agent_credential(config)
    opener: Opener = functools.partial(
        connect,
        config.nats_url,
        name="dante-agent",
        forever=True,
        credential=credential,
        machine=machine.provider_id,
    )
    link = Link(opener, api_prefix=api_prefix(credential))
    log.info("connecting", url=config.nats_url, provider_id=machine.provider_id)
    with anyio.CancelScope() as connecting:
        signals.tasks.start_soon(_cancel_when, signals.stopping, connecting)
        # A refusal of the very first login ends the agent (LoginRefused): nothing runs yet.
        await link.open()
    if connecting.cancelled_caught:
        log.info("agent stopped before reaching the platform")
        return
    # In the signals' task group, not one of its own: a failure of the agent must come out
    # as it is (see `until_signalled`).
    keeping = anyio.CancelScope()
    signals.tasks.start_soon(_keep_open, link, keeping)
    try:
        agent = Agent(
            machine,
            link,
            journal,
            executors=executors,
            stats=metrics.stats if metrics is not None else None,
        )
        if metrics is not None:
            metrics.agent = agent
        await agent.run(signals.stopping, signals.hurry)
    finally:
        keeping.cancel()
        await link.close()


async def until_signalled(serving: Callable[[Signals], Awaitable[None]]) -> None:
    """Run `serving` with the `Signals` that SIGTERM and SIGINT set.

    What `serving` raises is raised as it is. Raised inside the task group that watches the
    signals, it would come out wrapped in an ExceptionGroup (anyio wraps even the exception
    of the task group's own body), past every `except AgentFailure` or `except
    ConnectFailed` of the caller, as a traceback.
    """
    stopping, hurry = anyio.Event(), anyio.Event()
    failure: Exception | None = None
    async with anyio.create_task_group() as tasks:
        # Started, not just scheduled: from here on a signal is an orderly shutdown.
        await tasks.start(watch_signals, stopping, hurry)
        try:
            await serving(Signals(stopping, hurry, tasks))
        except Exception as exc:
            failure = exc
        tasks.cancel_scope.cancel()
    if failure is not None:
        raise failure


async def _keep_open(link: Link, scope: anyio.CancelScope) -> None:
    with scope:
        await link.keep_open()


def agent_credential(config: AgentConfig) -> Credential | None:
    """How the agent logs in: DANTE_USERNAME with DANTE_PASSWORD (environment or .env), else
    the account's stored `dante login` for the URL; None against a server without logins."""
    if config.password:
        return Credential(username=config.owner, secret=config.password, source="environment")
    stored = stored_login(config.nats_url)
    if stored is not None and stored.username != config.owner:
        raise AgentFailure(
            f"the stored login for {config.nats_url} is {stored.username!r}, not "
            f"DANTE_USERNAME {config.owner!r}; set DANTE_PASSWORD, or `dante login` as "
            f"{config.owner}"
        )
    return stored


def pgid_recorder(journal: Journal) -> Callable[[RunSpec, int], None]:
    """Journal a script job's process group as soon as it exists, to kill it after a crash."""

    def record(spec: RunSpec, pgid: int) -> None:
        journal.record_pgid((spec.job_id, spec.attempt), pgid)

    return record


async def _cancel_when(event: anyio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
