"""Finding this machine's GPUs: each vendor's backend in turn, with the reason any found none."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from dante.agent.gpus.apple import AppleBackend
from dante.agent.gpus.backend import Backend, BackendUnavailable
from dante.agent.gpus.intel import IntelBackend
from dante.agent.gpus.nvidia_smi import NvidiaSmiBackend
from dante.agent.gpus.nvml import NvidiaBackend
from dante.agent.gpus.rocm import AmdBackend
from dante.agent.gpus.simulate import parse_simulate
from dante.schemas.values import Gpu

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class BackendReport:
    """What one backend found: how many GPUs, or why none (empty when it found some)."""

    name: str
    found: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Detection:
    """The GPUs to offer, and what each backend tried reported."""

    gpus: tuple[Gpu, ...]
    backends: tuple[BackendReport, ...]


def default_backends() -> list[Backend]:
    """NVIDIA (NVML, else nvidia-smi where NVML cannot load), AMD, Apple, Intel: the order
    `detect_gpus` tries them in."""
    return [NvidiaBackend(), NvidiaSmiBackend(), AmdBackend(), AppleBackend(), IntelBackend()]


def detect_gpus(backends: Sequence[Backend] | None = None) -> Detection:
    """Try each backend in order and keep the GPUs of the first that finds any.

    Only one vendor's GPUs are offered: GPU indices, device assignment (CUDA_VISIBLE_DEVICES,
    Docker device requests) and telemetry are all per vendor, so a machine mixing vendors
    offers those of the first one found. A backend that fails never stops the others.
    """
    reports: list[BackendReport] = []
    for backend in default_backends() if backends is None else backends:
        try:
            gpus = backend.detect()
        except BackendUnavailable as exc:
            reports.append(BackendReport(backend.name, 0, str(exc)))
            continue
        except Exception as exc:
            # A parser meeting output it never saw must not stop the agent: report, go on.
            log.warning("gpu backend failed", backend=backend.name, error=repr(exc))
            reports.append(BackendReport(backend.name, 0, f"failed unexpectedly: {exc!r}"))
            continue
        if not gpus:
            reports.append(BackendReport(backend.name, 0, "no GPUs found"))
            continue
        reports.append(BackendReport(backend.name, len(gpus)))
        return Detection(gpus=tuple(gpus), backends=tuple(reports))
    return Detection(gpus=(), backends=tuple(reports))


def simulated_detection(spec: str) -> Detection:
    """The detection result for `--simulate SPEC` (ValueError if the spec is malformed)."""
    gpus = parse_simulate(spec)
    return Detection(gpus=tuple(gpus), backends=(BackendReport("simulated", len(gpus)),))
