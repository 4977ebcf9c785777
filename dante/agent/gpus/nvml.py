"""NVIDIA GPUs through NVML (the nvidia-ml-py bindings), behind a small interface.

`NvmlLike` names the handful of pynvml functions Dante calls, so a recorded machine can stand
in for the real library in tests. pynvml before 11.5 returned `bytes` for names and ids and
later versions return `str`; `text()` accepts both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Final, Protocol, TypeVar

import pynvml

from dante.agent.gpus.backend import BackendUnavailable
from dante.schemas.values import Gpu

#: pynvml's exception type; every NVML call raises a subclass of it.
NVMLError: Final[type[Exception]] = pynvml.NVMLError
NVML_ERROR_NOT_SUPPORTED: Final = 3
NVML_ERROR_DRIVER_NOT_LOADED: Final = 9
NVML_ERROR_LIBRARY_NOT_FOUND: Final = 12
NVML_ERROR_FUNCTION_NOT_FOUND: Final = 13
NVML_TEMPERATURE_GPU: Final = 0

_MIB: Final = 1024 * 1024
_T = TypeVar("_T")


class MemoryInfo(Protocol):
    total: int
    used: int
    free: int


class PciInfo(Protocol):
    busId: str | bytes  # noqa: N815 - NVML's field name


class Utilization(Protocol):
    gpu: int
    memory: int


class NvmlLike(Protocol):
    """The NVML calls Dante makes, as pynvml spells them. Handles are opaque."""

    def nvmlInit(self) -> None: ...  # noqa: N802
    def nvmlShutdown(self) -> None: ...  # noqa: N802
    def nvmlSystemGetDriverVersion(self) -> str | bytes: ...  # noqa: N802
    def nvmlSystemGetCudaDriverVersion(self) -> int: ...  # noqa: N802
    def nvmlSystemGetCudaDriverVersion_v2(self) -> int: ...  # noqa: N802
    def nvmlDeviceGetCount(self) -> int: ...  # noqa: N802
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...  # noqa: N802
    def nvmlDeviceGetName(self, handle: Any) -> str | bytes: ...  # noqa: N802
    def nvmlDeviceGetUUID(self, handle: Any) -> str | bytes: ...  # noqa: N802
    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> MemoryInfo: ...  # noqa: N802
    def nvmlDeviceGetPciInfo(self, handle: Any) -> PciInfo: ...  # noqa: N802
    def nvmlDeviceGetCudaComputeCapability(self, handle: Any) -> tuple[int, int]: ...  # noqa: N802
    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int: ...  # noqa: N802
    def nvmlDeviceGetPowerManagementLimit(self, handle: Any) -> int: ...  # noqa: N802
    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int: ...  # noqa: N802
    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int: ...  # noqa: N802
    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Utilization: ...  # noqa: N802


def text(value: str | bytes) -> str:
    """NVML text as `str`, whichever pynvml version returned it."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace").rstrip("\x00")
    return value


def error_code(exc: BaseException) -> int | None:
    code = getattr(exc, "value", None)
    return code if isinstance(code, int) else None


def cuda_version(nvml: NvmlLike) -> str | None:
    """The CUDA version the driver supports, "12.7" for NVML's 12070; None if unknown."""
    try:
        encoded = nvml.nvmlSystemGetCudaDriverVersion_v2()
    except NVMLError:
        # The _v2 call is missing from old drivers; the first one is not.
        try:
            encoded = nvml.nvmlSystemGetCudaDriverVersion()
        except NVMLError:
            return None
    return f"{encoded // 1000}.{(encoded % 1000) // 10}"


class NvidiaBackend:
    """Finds NVIDIA GPUs with NVML. `nvml` defaults to the real pynvml module."""

    name = "nvidia"

    def __init__(self, nvml: NvmlLike | None = None) -> None:
        self._nvml: NvmlLike = nvml if nvml is not None else pynvml

    def detect(self) -> list[Gpu]:
        nvml = self._nvml
        start(nvml)
        try:
            driver = text(nvml.nvmlSystemGetDriverVersion())
            cuda = cuda_version(nvml)
            return [
                self._describe(index, driver, cuda) for index in range(nvml.nvmlDeviceGetCount())
            ]
        except NVMLError as exc:
            raise BackendUnavailable(f"NVML could not describe the GPUs: {exc}") from exc
        finally:
            _shutdown(nvml)

    def _describe(self, index: int, driver: str, cuda: str | None) -> Gpu:
        nvml = self._nvml
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        return Gpu(
            index=index,
            uuid=text(nvml.nvmlDeviceGetUUID(handle)),
            vendor="nvidia",
            model=text(nvml.nvmlDeviceGetName(handle)),
            vram_mb=nvml.nvmlDeviceGetMemoryInfo(handle).total // _MIB,
            driver_version=driver,
            cuda_version=cuda,
            compute_capability=optional(lambda: _capability(nvml, handle)),
            power_limit_w=optional(lambda: round(_power_limit_mw(nvml, handle) / 1000)),
            pci_bus_id=optional(lambda: text(nvml.nvmlDeviceGetPciInfo(handle).busId)),
        )


def start(nvml: NvmlLike) -> None:
    """nvmlInit, with the failures a provider meets turned into plain reasons."""
    try:
        nvml.nvmlInit()
    except NVMLError as exc:
        code = error_code(exc)
        if code == NVML_ERROR_LIBRARY_NOT_FOUND:
            reason = "the NVIDIA driver's NVML library (libnvidia-ml.so.1) is not installed"
        elif code == NVML_ERROR_DRIVER_NOT_LOADED:
            reason = "the NVIDIA kernel driver is not loaded"
        else:
            reason = f"NVML failed to start: {exc}"
        raise BackendUnavailable(reason) from exc


def _shutdown(nvml: NvmlLike) -> None:
    with contextlib.suppress(NVMLError):  # nothing to release if it never started properly
        nvml.nvmlShutdown()


def _power_limit_mw(nvml: NvmlLike, handle: Any) -> int:
    # The enforced limit is what the card actually holds to; older drivers only have the
    # management limit.
    try:
        return nvml.nvmlDeviceGetEnforcedPowerLimit(handle)
    except NVMLError:
        return nvml.nvmlDeviceGetPowerManagementLimit(handle)


def _capability(nvml: NvmlLike, handle: Any) -> str:
    major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
    return f"{major}.{minor}"


def optional(read: Callable[[], _T]) -> _T | None:
    """A value some GPUs do not support (consumer cards, old drivers): None rather than fail."""
    try:
        return read()
    except NVMLError:
        return None
