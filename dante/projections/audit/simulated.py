"""Usage whose telemetry was simulated: GPUs of `dante agent run --simulate` report made-up
readings (a `sleep` loop at 97 % and 261 W). Not a violation, but the audit says how much of
the log's usage it is, so no reader takes those readings for measurements.

A sample counts when it says so (`GpuSample.simulated`) or when its GPU was registered as
simulated by its provider, which also covers usage recorded before samples carried the flag.
"""

from __future__ import annotations

from collections.abc import Mapping

from dante.projections.audit.facts import Handler
from dante.projections.audit.report import SimulatedUsage
from dante.schemas import events as ev


class SimulatedTelemetry:
    def __init__(self) -> None:
        self._simulated: dict[str, frozenset[int]] = {}
        self._placed: dict[tuple[str, int], str] = {}
        self._jobs: set[str] = set()
        self.ticks = 0
        self.gpu_ms = 0
        self.unmarked = 0

    def handlers(self) -> Mapping[type[ev.Event], Handler]:
        return {
            ev.ProviderRegistered: self._registered,
            ev.JobAssigned: self._assigned,
            ev.UsageRecorded: self._usage,
        }

    def committed(self, seq: int) -> None:
        del seq

    def finish(self) -> None:
        return None

    def result(self) -> SimulatedUsage:
        return SimulatedUsage(
            ticks=self.ticks,
            gpu_ms=self.gpu_ms,
            jobs=len(self._jobs),
            unmarked_ticks=self.unmarked,
        )

    def _registered(self, _seq: int, event: ev.ProviderRegistered) -> None:
        self._simulated[event.provider_id] = frozenset(
            gpu.index for gpu in event.gpus if gpu.simulated
        )

    def _assigned(self, _seq: int, event: ev.JobAssigned) -> None:
        self._placed[(event.job_id, event.attempt)] = event.provider_id

    def _usage(self, _seq: int, event: ev.UsageRecorded) -> None:
        provider = self._placed.get((event.job_id, event.attempt), "")
        registered = self._simulated.get(provider, frozenset())
        for tick in event.ticks:
            marked = any(sample.simulated for sample in tick.samples)
            if not marked and not any(sample.index in registered for sample in tick.samples):
                continue
            self.ticks += 1
            self.gpu_ms += tick.gpu_ms
            self.unmarked += not marked
            self._jobs.add(event.job_id)
