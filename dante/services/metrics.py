"""The platform's Prometheus metrics: what a process counts as it works, and what it reads
from the log, its consumers and the views when scraped.

Every platform process has a registry of its own (never prometheus_client's global one, so
several platforms in one process, as in tests, keep theirs apart), served over HTTP by
`dante up --metrics-port` and `dante serve --metrics-port` (`dante.cli.metrics`).

Off the hot path: commands and appends cost one counter and one histogram update each; the
handlers' counts are plain integers of the runner (`Seat.decided`, `HandlerRunner.pending`);
everything else is computed only when scraped, by `PlatformCollector`, in the event loop
(the HTTP server's thread hands it over and waits), from state the process has anyway: the
read models (jobs by state, GPUs, providers, money charged), the handlers' runners (their
lag), the log's last sequence and, where the handlers run elsewhere, their consumers' info.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import structlog
from nats.js.errors import NotFoundError
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from nats.js.client import JetStreamContext

    from dante.events.store import EventStore
    from dante.handlers.runner import HandlerRunner
    from dante.services.queries import ReadModels

log = structlog.get_logger(__name__)

#: Seconds: from a cached reply (well under a millisecond) to a command that timed out (15 s).
LATENCY_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0,
)  # fmt: skip
#: How long a scrape waits for the event loop to gather what it reads.
SCRAPE_TIMEOUT_S: Final = 5.0
#: The job states always reported (0 when none), so a dashboard's series never vanish.
JOB_STATES: Final = ("queued", "assigned", "running", "completed", "failed", "cancelled", "stopped")


class PlatformMetrics:
    """The counters and histograms one platform process updates, in its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.commands = Counter(
            "dante_commands",
            "Commands and queries answered, by role, verb and outcome (ok, or the error code).",
            ["role", "verb", "outcome"],
            registry=self.registry,
        )
        self.command_seconds = Histogram(
            "dante_command_seconds",
            "Time from a command's arrival to its answer, by role and verb.",
            ["role", "verb"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.append_seconds = Histogram(
            "dante_append_seconds",
            "Time one append to the log took (one event, or one atomic batch of several).",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.appended = Counter(
            "dante_appended_events",
            "Events this process sent to the log (acknowledged or found already there).",
            registry=self.registry,
        )

    def observe_append(self, seconds: float, events: int) -> None:
        self.append_seconds.observe(seconds)
        self.appended.inc(events)

    def observe_command(self, role: str, verb: str, outcome: str, seconds: float) -> None:
        self.commands.labels(role, verb, outcome).inc()
        self.command_seconds.labels(role, verb).observe(seconds)


@dataclass
class Sources:
    """What a platform process can report on when scraped (None: not in this process)."""

    store: EventStore
    js: JetStreamContext
    #: The handlers' runners; `local`: they run in this process (else their consumers are
    #: asked how far behind they are).
    runners: list[HandlerRunner] = field(default_factory=list)
    local_handlers: bool = False
    read_models: ReadModels | None = None


class PlatformCollector:
    """Metrics computed when scraped, in the event loop of the process that made it."""

    def __init__(self, sources: Sources) -> None:
        self._sources = sources
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()

    def describe(self) -> list[Metric]:
        # Registering calls this instead of `collect`, which would wait for the loop that
        # is registering it.
        return []

    def collect(self) -> Iterator[Metric]:
        if threading.get_ident() == self._thread:
            raise RuntimeError("scrape the platform's metrics from another thread (over HTTP)")
        future = asyncio.run_coroutine_threadsafe(self._gather(), self._loop)
        try:
            metrics = future.result(timeout=SCRAPE_TIMEOUT_S)
        except Exception as exc:  # a slow loop or an unreachable log: report what answers
            future.cancel()
            log.warning("metrics.gather_failed", error=repr(exc))
            return iter(())
        return iter(metrics)

    async def _gather(self) -> list[Metric]:
        found: list[Metric] = []
        sources = self._sources
        last = await sources.store.last_seq()
        found.append(
            GaugeMetricFamily(
                "dante_log_last_sequence", "The stream sequence of the log's last event.", last
            )
        )
        found += await self._handlers()
        if sources.read_models is not None:
            found += await self._views(sources.read_models, last)
        return found

    async def _handlers(self) -> list[Metric]:
        sources = self._sources
        lag = GaugeMetricFamily(
            "dante_handler_lag_events",
            "Events of the log a handler has yet to act on (its consumer's pending ones and "
            "those fetched it has not decided yet).",
            labels=["handler"],
        )
        decided = CounterMetricFamily(
            "dante_handler_decided",
            "Triggers a handler of this process decided on.",
            labels=["handler"],
        )
        js = sources.js
        for runner in sources.runners:
            names = [seat.handler.name for seat in runner.seats]
            if sources.local_handlers:
                for seat in runner.seats:
                    lag.add_metric([seat.handler.name], runner.lag(seat))
                    decided.add_metric([seat.handler.name], seat.decided)
                continue
            try:
                info = await js.consumer_info(sources.store.stream, runner.durable)
            except NotFoundError:  # not made yet: no handler ever ran
                continue
            behind = (info.num_pending or 0) + (info.num_ack_pending or 0)
            for name in names:
                lag.add_metric([name], behind)
        return [lag, decided] if sources.local_handlers else [lag]

    async def _views(self, read_models: ReadModels, last: int) -> list[Metric]:
        summary, (charged, fees) = await read_models.summary()
        views_lag = GaugeMetricFamily(
            "dante_views_lag_events",
            "Events of the log the read models do not include yet.",
            max(0, last - summary.position),
        )
        jobs = GaugeMetricFamily("dante_jobs", "Jobs by state.", labels=["state"])
        for state in sorted({*JOB_STATES, *summary.jobs}):
            jobs.add_metric([state], summary.jobs.get(state, 0))
        gpus = GaugeMetricFamily("dante_gpus", "Listed GPUs, free or busy.", labels=["state"])
        gpus.add_metric(["free"], summary.gpus_free)
        gpus.add_metric(["busy"], summary.gpus_busy)
        providers = GaugeMetricFamily(
            "dante_providers", "Provider machines by status.", labels=["status"]
        )
        for status in sorted({"online", "offline", *summary.providers}):
            providers.add_metric([status], summary.providers.get(status, 0))
        online = GaugeMetricFamily(
            "dante_agents_online",
            "Provider machines whose agent is online.",
            summary.providers.get("online", 0),
        )
        charged_total = CounterMetricFamily(
            "dante_charged_udgpu",
            "µdGPU charged to renters for usage, from the log (an integer).",
            charged,
        )
        fees_total = CounterMetricFamily(
            "dante_fees_udgpu", "µdGPU the platform collected in fees (an integer).", fees
        )
        wallets = GaugeMetricFamily("dante_wallets", "Wallets.", summary.wallets)
        return [views_lag, jobs, gpus, providers, online, charged_total, fees_total, wallets]
