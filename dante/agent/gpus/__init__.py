"""GPU detection (NVIDIA, AMD, Apple, Intel, or simulated) and live GPU telemetry."""

from dante.agent.gpus.backend import Backend, BackendUnavailable
from dante.agent.gpus.detection import (
    BackendReport,
    Detection,
    default_backends,
    detect_gpus,
    simulated_detection,
)
from dante.agent.gpus.simulate import parse_simulate
from dante.agent.gpus.telemetry import GpuTelemetry, NvmlTelemetry, Reading, SimulatedTelemetry

__all__ = [
    "Backend",
    "BackendReport",
    "BackendUnavailable",
    "Detection",
    "GpuTelemetry",
    "NvmlTelemetry",
    "Reading",
    "SimulatedTelemetry",
    "default_backends",
    "detect_gpus",
    "parse_simulate",
    "simulated_detection",
]
