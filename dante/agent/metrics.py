"""The agent's Prometheus metrics (`dante agent run --metrics-port`), in a registry of its
own, read when scraped from what the agent counts anyway (`AgentStats`, its link and
heartbeats): nothing is added to the work itself."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from dante.agent.stats import AgentStats

if TYPE_CHECKING:
    from dante.agent.daemon import Agent

#: The outcomes of finished attempts, always reported (0 when none).
OUTCOMES = ("completed", "failed", "interrupted")


class AgentMetrics:
    """The registry the agent's metrics are served from, and the agent it reports on (set
    once it runs: before that only its GPUs are known)."""

    def __init__(self, gpus: int = 0) -> None:
        self.stats = AgentStats()
        self.gpus = gpus
        self.agent: Agent | None = None
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Collector(self))


class _Collector:
    def __init__(self, metrics: AgentMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        metrics = self._metrics
        stats = metrics.stats
        agent = metrics.agent
        # Copied first: the agent's loop may change the dict while this thread reads it.
        attempts = list(agent.attempts.values()) if agent is not None else []
        running = sum(1 for attempt in attempts if attempt.running)
        yield GaugeMetricFamily("dante_agent_gpus", "GPUs this agent offers.", metrics.gpus)
        yield GaugeMetricFamily(
            "dante_agent_connected",
            "1 while the agent is connected to the platform.",
            1 if agent is not None and agent.link.is_connected else 0,
        )
        yield GaugeMetricFamily("dante_agent_jobs_running", "Job attempts running.", running)
        yield GaugeMetricFamily(
            "dante_agent_attempts", "Job attempts the agent holds (any phase).", len(attempts)
        )
        yield CounterMetricFamily(
            "dante_agent_attempts_started", "Job attempts begun.", stats.attempts_started
        )
        finished = CounterMetricFamily(
            "dante_agent_attempts_finished",
            "Job attempts reported finished, by outcome.",
            labels=["outcome"],
        )
        for outcome in sorted({*OUTCOMES, *stats.attempts_finished}):
            finished.add_metric([outcome], stats.attempts_finished[outcome])
        yield finished
        yield CounterMetricFamily(
            "dante_agent_declined", "Assignments the agent declined.", stats.declined
        )
        yield CounterMetricFamily(
            "dante_agent_usage_reports",
            "Usage reports the platform took.",
            stats.usage_reports,
        )
        yield CounterMetricFamily(
            "dante_agent_usage_ticks", "Usage ticks the platform took.", stats.usage_ticks
        )
        yield CounterMetricFamily(
            "dante_agent_usage_gpu_ms",
            "GPU-milliseconds of usage the platform took (an integer).",
            stats.usage_gpu_ms,
        )
        yield CounterMetricFamily(
            "dante_agent_usage_refused_ticks",
            "Usage ticks the platform refused (their attempt had ended or moved).",
            stats.usage_refused_ticks,
        )
        link = agent.link if agent is not None else None
        reconnects = CounterMetricFamily(
            "dante_agent_reconnects",
            "Reconnections to the platform: by nats-py itself, or a new connection.",
            labels=["how"],
        )
        reconnects.add_metric(["reconnected"], link.reconnected if link else 0)
        reconnects.add_metric(["reopened"], link.reopened if link else 0)
        yield reconnects
        beats = CounterMetricFamily(
            "dante_agent_heartbeats", "Heartbeats sent, or failed.", labels=["result"]
        )
        beats.add_metric(["sent"], agent.heartbeats.sent if agent else 0)
        beats.add_metric(["failed"], agent.heartbeats.failed if agent else 0)
        yield beats
