"""The platform in one process: the log, the command service, the handlers, the views.

`dante up` runs one of these next to an embedded nats-server; against a cluster, several
processes can each run one (the command service is a queue group, the handlers share their
durable consumers). Tests run it in-process with a hand-moved clock.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from anyio.abc import TaskStatus

from dante.events.store import EventStore
from dante.events.streams import LogSettings, ensure_log
from dante.handlers.agent_consumers import AgentConsumers
from dante.handlers.billing import Billing
from dante.handlers.dispatcher import Dispatcher
from dante.handlers.files import Files
from dante.handlers.liveness import Liveness, watch_heartbeats
from dante.handlers.queries import ReadModels
from dante.handlers.runner import HandlerRunner, StepExecutor, WorldTail, utcnow
from dante.handlers.scheduler import Scheduler
from dante.handlers.service import CommandService, Extension
from dante.handlers.settings import Settings
from dante.handlers.statements import Statements
from dante.projections.runner import ProjectionRunner

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

log = structlog.get_logger(__name__)


@dataclass
class PlatformOptions:
    data_dir: Path
    settings: Settings = field(default_factory=Settings)
    log_settings: LogSettings = field(default_factory=LogSettings)
    clock: Callable[[], datetime] = utcnow
    #: How often handlers look at deadlines; tests set it high and call `tick()` instead.
    timer_interval: float = 1.0


class Platform:
    """Owns every service of the platform over one NATS connection."""

    def __init__(
        self, nc: NATS, options: PlatformOptions, *, extensions: list[Extension] | None = None
    ) -> None:
        self.nc = nc
        self.options = options
        self.store = EventStore(nc)
        self.tail = WorldTail(self.store)
        settings = options.settings
        self.scheduler = Scheduler(settings)
        self.billing = Billing(settings)
        self.dispatcher = Dispatcher()
        self.liveness = Liveness(settings)
        self.runners = [
            HandlerRunner(
                nc,
                self.store,
                self.tail,
                handler,
                clock=options.clock,
                timer_interval=options.timer_interval,
            )
            for handler in (self.scheduler, self.billing, self.dispatcher, self.liveness)
        ]
        self._heartbeats = StepExecutor(nc, self.store, self.tail, "liveness")
        self.views = ProjectionRunner(self.store, options.data_dir / "views.sqlite3")
        self.read_models = ReadModels(self.views, settings)
        # Uploads are assembled in a local spool before they reach the object store.
        self.files = Files(nc, scratch_dir=options.data_dir / "spool")
        self.agent_consumers = AgentConsumers(nc, self.store)
        self.service = CommandService(
            nc,
            self.store,
            settings=settings,
            extensions=[
                self.read_models,
                self.files,
                Statements(self.store),
                *(extensions or []),
            ],
            clock=options.clock,
        )
        self.ready = asyncio.Event()

    async def run(self, *, extra: list[Callable[[], Any]] | None = None) -> None:
        """Set up the log, then run everything until cancelled.

        `extra` are more tasks to run alongside, once the log is set up (`dante up` runs the
        identity service, `dante.handlers.auth.service.Identity.run`, so)."""
        await ensure_log(self.nc.jetstream(), self.options.log_settings)
        await self.tail.catch_up()
        async with anyio.create_task_group() as tg:
            await tg.start(self._run_views)
            tg.start_soon(self._supervise, "world", self.tail.run)
            for runner in self.runners:
                tg.start_soon(self._supervise, runner.durable, runner.run)
            tg.start_soon(self._supervise, "heartbeats", self._watch_heartbeats)
            tg.start_soon(self._supervise, "agent-consumers", self.agent_consumers.run)
            for task in extra or []:
                tg.start_soon(task)
            await self.service.start()
            try:
                self.ready.set()
                log.info("platform.ready")
                await anyio.sleep_forever()
            finally:
                with anyio.CancelScope(shield=True):
                    await self.service.stop()
                    await self.read_models.close()
                    await self.files.close()

    @staticmethod
    async def _supervise(name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run a part of the platform, restarting it with backoff if it fails.

        A part fails on what it cannot handle (a lost connection it gave up on, a bug); the
        rest of the platform keeps serving meanwhile. Cancellation ends it for good.
        """
        delay = 1.0
        while True:
            try:
                await run()
            except Exception:
                log.exception("platform.part_failed", part=name, restart_in=delay)
                await anyio.sleep(delay)
                delay = min(delay * 2, 30.0)
            else:
                return

    async def _run_views(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            await self.views.run(task_status=task_status)
        except Exception:
            log.exception("platform.part_failed", part="views", restart_in=1.0)
            await anyio.sleep(1.0)
            await self._supervise("views", self.views.run)

    async def _watch_heartbeats(self) -> None:
        await watch_heartbeats(self.nc, self._heartbeats, self.liveness, clock=self.options.clock)

    async def tick(self) -> None:
        """Run every handler's time-based decisions once, now."""
        for runner in self.runners:
            await runner.tick()

    async def settle(self, timeout: float = 20.0) -> None:
        """Wait until every handler has acted on everything in the log (and so on, until
        nothing new appears): tests and the demo use it to observe a quiet platform."""
        js = self.nc.jetstream()
        async with asyncio.timeout(timeout):
            while True:
                last = await self.store.last_seq()
                await self.tail.reached(last)
                busy = False
                for runner in self.runners:
                    with contextlib.suppress(Exception):
                        info = await js.consumer_info(self.store.stream, runner.durable)
                        if info.num_pending or info.num_ack_pending:
                            busy = True
                await self.views.wait_for(last)
                if not busy and await self.store.last_seq() == last:
                    return
                await asyncio.sleep(0.02)
