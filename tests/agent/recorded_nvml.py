"""A recorded NVIDIA machine: replays what NVML's calls returned there (see fixtures/README.md).

It implements `NvmlLike` the way pynvml behaves: calls before `nvmlInit` fail, handles are only
valid for existing indices, a value recorded as null raises NVML's "Not Supported" (as consumer
cards do for some fields), and `legacy_bytes=True` returns bytes for text as pynvml before 11.5.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pynvml

FIXTURES = Path(__file__).parent / "fixtures" / "nvidia"

NOT_SUPPORTED = 3
UNINITIALIZED = 1
INVALID_ARGUMENT = 2


@dataclass
class RecordedMemory:
    total: int
    used: int
    free: int


@dataclass
class RecordedPci:
    busId: str | bytes  # noqa: N815 - NVML's field name


@dataclass
class RecordedUtilization:
    gpu: int
    memory: int


def recording(name: str) -> dict[str, Any]:
    """The recording `fixtures/nvidia/<name>-nvml.json` ("h100", "rtx4090")."""
    loaded: dict[str, Any] = json.loads((FIXTURES / f"{name}-nvml.json").read_text())
    return loaded


class RecordedNvml:
    def __init__(
        self,
        recorded: dict[str, Any],
        *,
        legacy_bytes: bool = False,
        init_error: int | None = None,
    ) -> None:
        self._rec = copy.deepcopy(recorded)
        self._legacy_bytes = legacy_bytes
        self._init_error = init_error
        self.initialized = False
        self.shutdowns = 0

    # ── lifecycle ──
    def nvmlInit(self) -> None:  # noqa: N802
        if self._init_error is not None:
            raise pynvml.NVMLError(self._init_error)
        self.initialized = True

    def nvmlShutdown(self) -> None:  # noqa: N802
        self._check()
        self.initialized = False
        self.shutdowns += 1

    # ── system ──
    def nvmlSystemGetDriverVersion(self) -> str | bytes:  # noqa: N802
        return self._text(self._value(self._rec, "nvmlSystemGetDriverVersion"))

    def nvmlSystemGetCudaDriverVersion(self) -> int:  # noqa: N802
        return int(self._value(self._rec, "nvmlSystemGetCudaDriverVersion_v2"))

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:  # noqa: N802
        return int(self._value(self._rec, "nvmlSystemGetCudaDriverVersion_v2"))

    # ── devices ──
    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        self._check()
        return len(self._rec["devices"])

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:  # noqa: N802
        self._check()
        if not 0 <= index < len(self._rec["devices"]):
            raise pynvml.NVMLError(INVALID_ARGUMENT)
        return index

    def nvmlDeviceGetName(self, handle: int) -> str | bytes:  # noqa: N802
        return self._text(self._device(handle, "nvmlDeviceGetName"))

    def nvmlDeviceGetUUID(self, handle: int) -> str | bytes:  # noqa: N802
        return self._text(self._device(handle, "nvmlDeviceGetUUID"))

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> RecordedMemory:  # noqa: N802
        return RecordedMemory(**self._device(handle, "nvmlDeviceGetMemoryInfo"))

    def nvmlDeviceGetPciInfo(self, handle: int) -> RecordedPci:  # noqa: N802
        # pynvml never decodes struct fields: busId is bytes in every version.
        bus = self._device(handle, "nvmlDeviceGetPciInfo")["busId"]
        return RecordedPci(busId=bus.encode())

    def nvmlDeviceGetCudaComputeCapability(self, handle: int) -> tuple[int, int]:  # noqa: N802
        major, minor = self._device(handle, "nvmlDeviceGetCudaComputeCapability")
        return int(major), int(minor)

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: int) -> int:  # noqa: N802
        return int(self._device(handle, "nvmlDeviceGetEnforcedPowerLimit"))

    def nvmlDeviceGetPowerManagementLimit(self, handle: int) -> int:  # noqa: N802
        return int(self._device(handle, "nvmlDeviceGetPowerManagementLimit"))

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:  # noqa: N802
        return int(self._device(handle, "nvmlDeviceGetPowerUsage"))

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:  # noqa: N802
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return int(self._device(handle, "nvmlDeviceGetTemperature"))

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> RecordedUtilization:  # noqa: N802
        return RecordedUtilization(**self._device(handle, "nvmlDeviceGetUtilizationRates"))

    # ── helpers ──
    def _check(self) -> None:
        if not self.initialized:
            raise pynvml.NVMLError(UNINITIALIZED)

    def _device(self, handle: int, call: str) -> Any:
        self._check()
        return self._value(self._rec["devices"][handle], call)

    def _value(self, where: dict[str, Any], call: str) -> Any:
        self._check()
        value = where.get(call)
        if value is None:
            raise pynvml.NVMLError(NOT_SUPPORTED)
        return value

    def _text(self, value: str) -> str | bytes:
        return value.encode() if self._legacy_bytes else value
