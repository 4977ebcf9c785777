"""The usage meter: the wall time a job attempt runs, as numbered ticks, one sample per GPU.

Each assigned GPU is held for the whole time the job runs, so every sample of a tick carries
the same `gpu_ms`: the milliseconds of monotonic time the interval covered. The meter counts
the running total since it began and hands out its increase, so rounding never drifts and
the total reported for a GPU never exceeds the time since the meter began; the daemon begins
it only once the platform has recorded the job as started, which is the moment the
platform's own bound counts from. What the GPU itself reports (utilisation, memory, power,
temperature) comes from telemetry, taken at the end of each interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Final

import structlog

from dante.agent.gpus.telemetry import GpuTelemetry, Reading
from dante.schemas.values import GpuSample, UsageTick

log = structlog.get_logger(__name__)

#: A sample may cover at most a day (the schema's limit); longer gaps go into later ticks.
MAX_TICK_MS: Final = 86_400_000


def _in(value: int | None, low: int, high: int) -> int | None:
    """The reading if it is plausible, else None: a driver's nonsense never makes a tick
    the platform would refuse."""
    return value if value is not None and low <= value <= high else None


def gpu_sample(index: int, gpu_ms: int, reading: Reading) -> GpuSample:
    return GpuSample(
        index=index,
        gpu_ms=gpu_ms,
        utilization_pct=_in(reading.utilization_pct, 0, 100),
        memory_used_mb=_in(reading.memory_used_mb, 0, 1 << 40),
        power_w=_in(reading.power_w, 0, 100_000),
        temperature_c=_in(reading.temperature_c, -50, 200),
        simulated=reading.simulated,
    )


class UsageMeter:
    """Meters one attempt. `prepare()` proposes the next tick; `commit()` accepts it once it
    is journaled (a tick that could not be journaled is proposed again, larger, next time)."""

    def __init__(
        self,
        gpu_indices: Sequence[int],
        telemetry: GpuTelemetry,
        *,
        next_seq: int = 1,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._indices = tuple(gpu_indices)
        self._telemetry = telemetry
        self._clock = clock
        self._wall = wall
        self.next_seq = next_seq
        self._began: float | None = None
        self._ended: float | None = None
        #: Milliseconds metered so far (in committed ticks).
        self.metered_ms = 0

    @property
    def began(self) -> bool:
        return self._began is not None

    def begin(self, at: float | None = None) -> None:
        """Start counting (once): the platform has recorded the attempt as started."""
        if self._began is None:
            self._began = self._clock() if at is None else at

    def end(self, at: float | None = None) -> None:
        """The job ended: nothing after this moment is metered."""
        if self._ended is None:
            self._ended = self._clock() if at is None else at

    def elapsed_ms(self, at: float | None = None) -> int:
        """Whole milliseconds since the meter began (until it ended), 0 before."""
        if self._began is None:
            return 0
        now = self._clock() if at is None else at
        if self._ended is not None:
            now = min(now, self._ended)
        return max(0, int((now - self._began) * 1000))

    def prepare(self, at: float | None = None) -> UsageTick | None:
        """The next tick, covering the time since the last one; None when there is none."""
        gpu_ms = min(self.elapsed_ms(at) - self.metered_ms, MAX_TICK_MS)
        if gpu_ms <= 0 or not self._indices:
            return None
        try:
            readings = self._telemetry.sample(self._indices)
        except Exception as exc:
            # Telemetry is informative; the time is what is billed. Never lose a tick to it.
            log.warning("telemetry failed", error=repr(exc))
            readings = {}
        samples = [gpu_sample(i, gpu_ms, readings.get(i, Reading())) for i in self._indices]
        return UsageTick(seq=self.next_seq, ended_at=self._wall(), samples=samples)

    def commit(self, tick: UsageTick) -> None:
        assert tick.seq == self.next_seq, "ticks are committed in the order they were prepared"
        self.next_seq += 1
        self.metered_ms += tick.samples[0].gpu_ms
