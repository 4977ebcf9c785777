"""The platform: the log, the command service, the handlers, the views.

It has three parts that share nothing but the log (and the views' file), so they can run in
separate processes:

- **commands**: the command service (a queue group) with its queries, files and statements;
- **handlers**: the world followed from the log (starting from its snapshot in the data
  folder, `dante.handlers.snapshot`), and the handlers deciding on it
  (scheduling, billing, dispatch, liveness: durable consumers that several processes can
  share), the heartbeat watcher and the machines' dispatch consumers;
- **views**: the read models, folded from the log into `views.sqlite3` in the data folder.
  The queries read that file; where the views run in another process, they wait for the
  position stored in it (`StoredViews`) to read their own writes.

`dante up` runs the commands in its own process and the handlers and views in a child
(`dante serve handlers views`), so the platform uses two cores; `--processes 1` runs all of
them in one, as tests do (in-process, with a hand-moved clock). Against a cluster, more
processes can run the commands or the handlers; the views belong next to the queries' file.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from dante.chain import Chain
from dante.chain.local import LocalChain
from dante.domain.settings import Settings
from dante.events.store import EventStore
from dante.events.streams import LogSettings, ensure_log
from dante.events.subjects import EVENT_PREFIX
from dante.handlers.billing import Billing
from dante.handlers.dispatcher import Dispatcher
from dante.handlers.liveness import Liveness, watch_heartbeats
from dante.handlers.runner import Handler, HandlerRunner, WorldTail, executor_for, utcnow
from dante.handlers.scheduler import Scheduler
from dante.handlers.settlement import Settlement
from dante.handlers.snapshot import FILE_NAME as SNAPSHOT_FILE
from dante.handlers.snapshot import Snapshots
from dante.projections.runner import ProjectionRunner, StoredViews
from dante.services.agent_consumers import AgentConsumers
from dante.services.chain import ChainQueries
from dante.services.commands import CommandService, Extension
from dante.services.files import Files
from dante.services.files.inputs import InputSweeper
from dante.services.metrics import PlatformCollector, PlatformMetrics, Sources
from dante.services.presence import announce_handlers, announce_views
from dante.services.queries import ReadModels
from dante.services.statements import Statements

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.micro.service import Service
    from prometheus_client import CollectorRegistry

log = structlog.get_logger(__name__)

Part = Literal["commands", "handlers", "views"]
#: Every part: the whole platform in one process.
ALL_PARTS: Final[frozenset[Part]] = frozenset({"commands", "handlers", "views"})


@dataclass
class PlatformOptions:
    data_dir: Path
    settings: Settings = field(default_factory=Settings)
    log_settings: LogSettings = field(default_factory=LogSettings)
    clock: Callable[[], datetime] = utcnow
    #: How often handlers look at deadlines; tests set it high and call `tick()` instead.
    timer_interval: float = 1.0
    #: What this process runs (see the module's docstring).
    parts: frozenset[Part] = ALL_PARTS
    #: Whether it keeps Prometheus metrics (`Platform.metrics`, `metrics_registry()`).
    metrics: bool = False
    #: The chain dGPU settles on; None: the local chain in `<data_dir>/chain`.
    chain: Chain | None = None
    #: How often the settlement looks at the open withdrawals.
    settle_interval: float = 1.0


class Platform:
    """Owns every service of the platform over one NATS connection."""

    def __init__(
        self, nc: NATS, options: PlatformOptions, *, extensions: list[Extension] | None = None
    ) -> None:
        self.nc = nc
        self.options = options
        self.store = EventStore(nc)
        self.metrics = PlatformMetrics() if options.metrics else None
        if self.metrics is not None:
            self.store.observe_append = self.metrics.observe_append
        #: The handlers' world, saved now and then, loaded at start (`dante.handlers.snapshot`).
        self.snapshots = Snapshots(options.data_dir / SNAPSHOT_FILE, self.store)
        self.tail = WorldTail(self.store, snapshots=self.snapshots)
        settings = options.settings
        self.scheduler = Scheduler(settings)
        self.billing = Billing(settings)
        self.dispatcher = Dispatcher()
        self.liveness = Liveness(settings)
        # The scheduler, billing and the dispatcher act on the whole log: one consumer feeds
        # them all (each event delivered once, not three times). Liveness has its own, on
        # provider events only.
        core: list[Handler] = [self.scheduler, self.billing, self.dispatcher]
        runner = functools.partial(
            HandlerRunner,
            nc,
            self.store,
            self.tail,
            clock=options.clock,
            timer_interval=options.timer_interval,
        )
        self.runners = [
            runner(core, name="core", replaces=[f"handler-{h.name}" for h in core]),
            runner([self.liveness]),
        ]
        self._heartbeats = executor_for(nc, self.store, self.tail, "liveness")
        views = options.data_dir / "views.sqlite3"
        self.views = ProjectionRunner(self.store, views)
        self.stored_views = None if "views" in options.parts else StoredViews(views)
        self.read_models = ReadModels(self.stored_views or self.views, settings)
        # Uploads are assembled in a local spool before they reach the object store.
        self.files = Files(
            nc,
            scratch_dir=options.data_dir / "spool",
            input_quota_bytes=settings.input_quota_bytes,
        )
        self.inputs = InputSweeper(nc.jetstream(), lambda: self.tail.world, settings.input_ttl_s)
        self.agent_consumers = AgentConsumers(nc, self.store)
        # The local chain lives in one process: the one that serves the commands.
        self.chain: Chain | None = options.chain
        if self.chain is None and "commands" in options.parts:
            self.chain = LocalChain(options.data_dir / "chain")
        # Withdrawals are paid by the process that holds the chain; where no handlers run,
        # it follows the wallets only.
        self._payouts_tail = (
            self.tail
            if "handlers" in options.parts
            else WorldTail(self.store, subjects=f"{EVENT_PREFIX}.wallet.>")
        )
        self.settlement = (
            None
            if self.chain is None
            else Settlement(
                self.chain,
                self.store,
                lambda: self._payouts_tail.world,
                settings=settings,
                clock=options.clock,
            )
        )
        chain_queries: list[Extension] = [] if self.chain is None else [ChainQueries(self.chain)]
        self.service = CommandService(
            nc,
            self.store,
            settings=settings,
            extensions=[
                self.read_models,
                self.files,
                Statements(self.store),
                *chain_queries,
                *(extensions or []),
            ],
            clock=options.clock,
            snapshot=options.data_dir / SNAPSHOT_FILE,
            metrics=self.metrics,
            chain=self.chain,
        )
        self.ready = asyncio.Event()

    def metrics_registry(self) -> CollectorRegistry:
        """This process's metrics, with those computed when scraped (call it in the event
        loop; scrape it from another thread, as prometheus_client's HTTP server does)."""
        if self.metrics is None:
            raise RuntimeError("the platform was made without metrics (PlatformOptions.metrics)")
        parts = self.options.parts
        sources = Sources(
            store=self.store,
            js=self.nc.jetstream(),
            runners=self.runners,
            local_handlers="handlers" in parts,
            read_models=self.read_models if "commands" in parts or "views" in parts else None,
        )
        self.metrics.registry.register(PlatformCollector(sources))
        return self.metrics.registry

    async def run(self, *, extra: list[Callable[[], Any]] | None = None) -> None:
        """Set up the log, then run this process's parts until cancelled.

        `extra` are more tasks to run alongside, once the log is set up (`dante up` runs the
        identity service, `dante.services.auth.service.Identity.run`, so)."""
        commands = "commands" in self.options.parts
        handlers = "handlers" in self.options.parts
        await ensure_log(self.nc.jetstream(), self.options.log_settings)
        if handlers:
            await self.tail.catch_up()
        elif self.settlement is not None:
            await self._payouts_tail.catch_up()
        async with anyio.create_task_group() as tg:
            if "views" in self.options.parts and commands:
                await tg.start(self._run_views)
            elif "views" in self.options.parts:
                # The queries are another process's: they read the views' file, which holds
                # the views at their stored position, and wait for it to pass what they
                # need. Ready does not wait for the rows to be loaded back (seconds at
                # fleet size): the views load and catch up meanwhile.
                tg.start_soon(self._run_views)
            if handlers:
                await self._start_handlers(tg)
            self._start_settlement(tg, follow=not handlers)
            announced = await self._announce()
            for task in extra or []:
                tg.start_soon(task)
            if commands:
                await self.service.start()
            try:
                self.ready.set()
                log.info("platform.ready", parts=sorted(self.options.parts))
                await anyio.sleep_forever()
            finally:
                with anyio.CancelScope(shield=True):
                    await self._stop(announced)

    async def _stop(self, announced: list[Service]) -> None:
        """What `run` started, stopped: the world saved, the services' announcements, the
        command service and what it opened. Each step is taken even when one before failed
        (a connection gone first, say): a file left open would keep its SQLite `-wal`."""
        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        if "handlers" in self.options.parts:
            steps.append(("snapshot", functools.partial(self.snapshots.close, self.tail.world)))
        # An announcement's stop fails when the connection went first: nothing to say then.
        steps += [("announcement", service.stop) for service in announced]
        if "commands" in self.options.parts:
            steps += [("commands", self.service.stop), ("files", self.files.close)]
            if self.chain is not None and self.options.chain is None:
                steps.append(("chain", self.chain.close))  # the local chain this process opened
        # Opened by the queries, or by a scrape of the metrics where no command is answered;
        # once, after the command service stopped asking.
        steps.append(("read-models", self.read_models.close))
        if self.stored_views is not None:
            steps.append(("views", self.stored_views.close))
        for name, step in steps:
            try:
                await step()
            except Exception:
                if name != "announcement":
                    log.warning("platform.stop_step_failed", step=name, exc_info=True)

    async def _announce(self) -> list[Service]:
        """Answer `$SRV.PING` (INFO, STATS) as the handlers and the views this process runs,
        so `dante status` finds them as it finds the commands."""
        announced = []
        if "handlers" in self.options.parts:
            announced.append(await announce_handlers(self.nc, self.runners))
        if "views" in self.options.parts:
            announced.append(await announce_views(self.nc, self.views))
        return announced

    def _start_settlement(self, tg: TaskGroup, *, follow: bool) -> None:
        """Pay withdrawals, where this process holds the chain (following the log itself
        when no handlers do it here)."""
        if self.settlement is None:
            return
        if follow:
            tg.start_soon(supervise, "wallets", self._payouts_tail.run)
        interval = self.options.settle_interval
        tg.start_soon(functools.partial(self.settlement.run, interval=interval))

    async def _start_handlers(self, tg: TaskGroup) -> None:
        """Follow the log and run the handlers; return once they decide (every handler's
        consumer exists and is being read)."""
        tg.start_soon(supervise, "world", self.tail.run)
        for runner in self.runners:
            tg.start_soon(supervise, runner.durable, runner.run)
        tg.start_soon(supervise, "heartbeats", self._watch_heartbeats)
        tg.start_soon(supervise, "agent-consumers", self.agent_consumers.run)
        tg.start_soon(supervise, "inputs-sweeper", self.inputs.run)
        for runner in self.runners:
            await runner.consuming.wait()

    async def _run_views(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            await self.views.run(task_status=task_status)
        except Exception:
            log.exception("platform.part_failed", part="views", restart_in=1.0)
            await anyio.sleep(1.0)
            await supervise("views", self.views.run)

    async def _watch_heartbeats(self) -> None:
        await watch_heartbeats(self.nc, self._heartbeats, self.liveness, clock=self.options.clock)

    async def settle_payouts(self) -> int:
        """One settlement pass now (tests); how many withdrawals are still open."""
        assert self.settlement is not None, "this process holds no chain"
        assert "handlers" in self.options.parts, "settle_payouts follows the whole log"
        await self.tail.reached(await self.store.last_seq())
        return await self.settlement.step()

    async def tick(self) -> None:
        """Run every handler's time-based decisions once, now."""
        for runner in self.runners:
            await runner.tick()

    async def settle(self, timeout: float = 20.0) -> None:
        """Wait until this process's parts have acted on everything in the log (and so on,
        until nothing new appears): every handler, and the views. Tests use it to observe a
        quiet platform."""
        js = self.nc.jetstream()
        handlers = "handlers" in self.options.parts
        async with asyncio.timeout(timeout):
            while True:
                last = await self.store.last_seq()
                busy = False
                if handlers:
                    await self.tail.reached(last)
                    for runner in self.runners:
                        with contextlib.suppress(Exception):
                            info = await js.consumer_info(self.store.stream, runner.durable)
                            if info.num_pending or info.num_ack_pending:
                                busy = True
                if "views" in self.options.parts:
                    await self.views.wait_for(last)
                if not busy and await self.store.last_seq() == last:
                    return
                await asyncio.sleep(0.02)


#: Restart delays of a failing part: from the first, doubling up to the last.
RESTART_FIRST_S: Final = 1.0
RESTART_MAX_S: Final = 30.0
#: A part that ran this long before it failed had been working: its restart waits the first
#: delay again, not the doubled one of failures long past.
HEALTHY_S: Final = 60.0


async def supervise(
    name: str,
    run: Callable[[], Awaitable[None]],
    *,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Run a part of the platform, restarting it with backoff if it fails.

    A part fails on what it cannot handle (a lost connection it gave up on, a bug); the
    rest of the platform keeps serving meanwhile. Cancellation ends it for good.
    """
    delay = RESTART_FIRST_S
    while True:
        started = clock()
        try:
            await run()
        except Exception:
            if clock() - started >= HEALTHY_S:
                delay = RESTART_FIRST_S
            log.exception("platform.part_failed", part=name, restart_in=delay)
            await sleep(delay)
            delay = min(delay * 2, RESTART_MAX_S)
        else:
            return
