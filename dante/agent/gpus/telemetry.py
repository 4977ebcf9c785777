"""What a GPU is doing right now: utilisation, memory, power and temperature.

The usage meter samples the GPUs of a running job every tick and turns each `Reading` into a
`GpuSample`. `sample` is synchronous and quick (NVML answers in microseconds); call it from a
worker thread if a slow driver could stall the event loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from dante.agent.gpus.nvml import NVML_TEMPERATURE_GPU, NVMLError, NvmlLike, optional, start
from dante.schemas.values import Gpu

_MIB: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Reading:
    """One GPU at one moment; None where the GPU does not report a value."""

    utilization_pct: int | None = None
    memory_used_mb: int | None = None
    power_w: int | None = None
    temperature_c: int | None = None
    #: Made up for a simulated GPU, not measured.
    simulated: bool = False


class GpuTelemetry(Protocol):
    def sample(self, indices: Sequence[int]) -> dict[int, Reading]:
        """A reading for each of `indices` (GPU indices as detected)."""
        ...

    def close(self) -> None:
        """Release the driver; no more samples after this."""
        ...


class NvmlTelemetry:
    """Readings from NVML. Opens NVML on creation; `close()` shuts it down."""

    def __init__(self, nvml: NvmlLike) -> None:
        self._nvml = nvml
        start(nvml)
        self._handles: dict[int, Any] = {}

    def sample(self, indices: Sequence[int]) -> dict[int, Reading]:
        return {index: self._read(index) for index in indices}

    def close(self) -> None:
        with contextlib.suppress(NVMLError):
            self._nvml.nvmlShutdown()

    def _read(self, index: int) -> Reading:
        nvml = self._nvml
        handle = self._handles.get(index)
        if handle is None:
            handle = self._handles[index] = nvml.nvmlDeviceGetHandleByIndex(index)
        # Each value on its own: a card that cannot report power still reports utilisation.
        return Reading(
            utilization_pct=optional(lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
            memory_used_mb=optional(lambda: nvml.nvmlDeviceGetMemoryInfo(handle).used // _MIB),
            power_w=optional(lambda: round(nvml.nvmlDeviceGetPowerUsage(handle) / 1000)),
            temperature_c=optional(
                lambda: nvml.nvmlDeviceGetTemperature(handle, NVML_TEMPERATURE_GPU)
            ),
        )


class SimulatedTelemetry:
    """Plausible readings for simulated GPUs: busy GPUs run hot and full, idle ones cool.

    Values are a pure function of (GPU, busy or not, how many samples were taken), so tests
    and demos see the same numbers every run, yet they move from tick to tick like real ones.
    """

    #: Board power assumed for a simulated GPU that states none.
    DEFAULT_POWER_LIMIT_W: Final = 300

    def __init__(self, gpus: Iterable[Gpu]) -> None:
        self._gpus = {gpu.index: gpu for gpu in gpus}
        self._busy: set[int] = set()
        self._ticks = 0

    def set_busy(self, indices: Iterable[int], busy: bool) -> None:
        """Mark GPUs as running a job (or not); the executor's caller does this."""
        if busy:
            self._busy.update(indices)
        else:
            self._busy.difference_update(indices)

    def sample(self, indices: Sequence[int]) -> dict[int, Reading]:
        self._ticks += 1
        return {index: self._read(index) for index in indices}

    def close(self) -> None:
        """Nothing to release."""

    def _read(self, index: int) -> Reading:
        gpu = self._gpus.get(index)
        if gpu is None:
            return Reading()
        # A small deterministic wobble in -3..+3 that differs per GPU and per tick.
        wobble = (self._ticks * 3 + index * 5) % 7 - 3
        limit = gpu.power_limit_w or self.DEFAULT_POWER_LIMIT_W
        if index in self._busy:
            return Reading(
                utilization_pct=95 + wobble,
                memory_used_mb=gpu.vram_mb * (70 + wobble) // 100,
                power_w=limit * (85 + wobble) // 100,
                temperature_c=72 + wobble,
                simulated=True,
            )
        return Reading(
            utilization_pct=0,
            memory_used_mb=min(gpu.vram_mb, 1),
            power_w=limit * (7 + wobble // 3) // 100,
            temperature_c=33 + wobble // 2,
            simulated=True,
        )
