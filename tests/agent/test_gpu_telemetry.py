"""Live readings: NVML (replayed from a recorded machine) and simulated GPUs."""

from __future__ import annotations

from typing import Any

from dante.agent.gpus import NvmlTelemetry, Reading, SimulatedTelemetry, parse_simulate
from dante.schemas.values import GpuSample
from tests.agent.recorded_nvml import RecordedNvml, recording


def test_nvml_readings_of_a_recorded_h100() -> None:
    nvml = RecordedNvml(recording("h100"))
    telemetry = NvmlTelemetry(nvml)

    readings = telemetry.sample([0, 1])

    assert readings == {
        0: Reading(utilization_pct=0, memory_used_mb=453, power_w=101, temperature_c=30),
        1: Reading(utilization_pct=0, memory_used_mb=453, power_w=83, temperature_c=30),
    }
    telemetry.close()
    assert not nvml.initialized


def test_a_value_the_gpu_cannot_report_is_none_and_the_rest_still_come() -> None:
    rec = recording("rtx4090")
    rec["devices"][1]["nvmlDeviceGetPowerUsage"] = None

    readings = NvmlTelemetry(RecordedNvml(rec)).sample([1])

    assert readings[1].power_w is None
    assert readings[1].temperature_c == 27
    assert readings[1].memory_used_mb == 354


def test_readings_fit_a_gpu_sample() -> None:
    reading = NvmlTelemetry(RecordedNvml(recording("h100"))).sample([0])[0]

    sample = GpuSample(
        index=0,
        gpu_ms=10_000,
        utilization_pct=reading.utilization_pct,
        memory_used_mb=reading.memory_used_mb,
        power_w=reading.power_w,
        temperature_c=reading.temperature_c,
    )
    assert sample.power_w == 101


def test_simulated_gpus_are_busy_only_while_a_job_runs() -> None:
    gpus = parse_simulate("2xNVIDIA H100 80GB HBM3:80")
    telemetry = SimulatedTelemetry(gpus)

    idle = telemetry.sample([0, 1])
    telemetry.set_busy([1], busy=True)
    busy = telemetry.sample([0, 1])
    telemetry.set_busy([1], busy=False)
    after = telemetry.sample([1])

    assert idle[0].utilization_pct == idle[1].utilization_pct == 0
    assert busy[0].utilization_pct == 0
    assert busy[1].utilization_pct is not None and busy[1].utilization_pct >= 90
    assert busy[1].memory_used_mb is not None and busy[1].memory_used_mb > 50 * 1024
    assert busy[1].temperature_c is not None and idle[1].temperature_c is not None
    assert busy[1].temperature_c > idle[1].temperature_c
    assert busy[1].power_w is not None and idle[1].power_w is not None
    assert busy[1].power_w > idle[1].power_w
    assert after[1].utilization_pct == 0


def test_simulated_readings_repeat_exactly_and_move_between_ticks() -> None:
    gpus = parse_simulate("1xRTX 4090:24")
    first, second = SimulatedTelemetry(gpus), SimulatedTelemetry(gpus)
    first.set_busy([0], busy=True)
    second.set_busy([0], busy=True)

    run_a = [first.sample([0])[0] for _ in range(5)]
    run_b = [second.sample([0])[0] for _ in range(5)]

    assert run_a == run_b
    assert len({r.utilization_pct for r in run_a}) > 1
    for reading in run_a:
        assert reading.utilization_pct is not None and 0 <= reading.utilization_pct <= 100
        assert reading.simulated  # made up, and every sample made of it says so
        GpuSample(index=0, gpu_ms=1000, simulated=reading.simulated, **_fields(reading))


def test_unknown_gpu_gives_an_empty_reading() -> None:
    assert SimulatedTelemetry([]).sample([3]) == {3: Reading()}


def _fields(reading: Reading) -> dict[str, Any]:
    return {
        "utilization_pct": reading.utilization_pct,
        "memory_used_mb": reading.memory_used_mb,
        "power_w": reading.power_w,
        "temperature_c": reading.temperature_c,
    }
