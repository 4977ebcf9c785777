"""NVIDIA detection through NVML, against recorded H100 and RTX 4090 machines."""

from __future__ import annotations

import pynvml
import pytest

from dante.agent.gpus import BackendUnavailable
from dante.agent.gpus.nvml import NvidiaBackend
from dante.schemas.values import Gpu
from tests.agent.recorded_nvml import RecordedNvml, recording


def test_h100_machine_is_described_field_by_field() -> None:
    nvml = RecordedNvml(recording("h100"))

    gpus = NvidiaBackend(nvml).detect()

    assert gpus == [
        Gpu(
            index=0,
            uuid="GPU-b42dd28e-ffdd-8720-1df0-98bd8cdc05b1",
            vendor="nvidia",
            model="NVIDIA H100 80GB HBM3",
            vram_mb=81559,
            driver_version="565.57.01",
            cuda_version="12.7",
            compute_capability="9.0",
            power_limit_w=700,
            pci_bus_id="00000000:18:00.0",
        ),
        Gpu(
            index=1,
            uuid="GPU-7c3cadbd-17e5-0913-f69b-c618122ea0cd",
            vendor="nvidia",
            model="NVIDIA H100 80GB HBM3",
            vram_mb=81559,
            driver_version="565.57.01",
            cuda_version="12.7",
            compute_capability="9.0",
            power_limit_w=700,
            pci_bus_id="00000000:2A:00.0",
        ),
    ]
    assert gpus[0].vram_gb == 80
    # NVML is released after detection, even though it succeeded.
    assert not nvml.initialized
    assert nvml.shutdowns == 1


def test_rtx_4090_machine() -> None:
    gpus = NvidiaBackend(RecordedNvml(recording("rtx4090"))).detect()

    assert [g.model for g in gpus] == ["NVIDIA GeForce RTX 4090"] * 2
    assert [g.vram_mb for g in gpus] == [24564, 24564]
    assert gpus[0].vram_gb == 24
    assert {g.cuda_version for g in gpus} == {"12.4"}
    assert {g.compute_capability for g in gpus} == {"8.9"}
    assert {g.power_limit_w for g in gpus} == {450}
    assert [g.pci_bus_id for g in gpus] == ["00000000:01:00.0", "00000000:25:00.0"]


def test_old_pynvml_returning_bytes_gives_the_same_gpus() -> None:
    as_str = NvidiaBackend(RecordedNvml(recording("h100"))).detect()
    as_bytes = NvidiaBackend(RecordedNvml(recording("h100"), legacy_bytes=True)).detect()

    assert as_bytes == as_str
    assert isinstance(as_bytes[0].uuid, str)


def test_fields_a_card_does_not_support_are_left_empty() -> None:
    rec = recording("rtx4090")
    for device in rec["devices"]:
        device["nvmlDeviceGetCudaComputeCapability"] = None
        device["nvmlDeviceGetEnforcedPowerLimit"] = None
        device["nvmlDeviceGetPowerManagementLimit"] = None
    rec["nvmlSystemGetCudaDriverVersion_v2"] = None

    gpus = NvidiaBackend(RecordedNvml(rec)).detect()

    assert len(gpus) == 2
    assert gpus[0].compute_capability is None
    assert gpus[0].power_limit_w is None
    assert gpus[0].cuda_version is None
    assert gpus[0].vram_mb == 24564


def test_management_limit_is_used_when_the_enforced_one_is_missing() -> None:
    rec = recording("h100")
    rec["devices"][0]["nvmlDeviceGetEnforcedPowerLimit"] = None
    rec["devices"][0]["nvmlDeviceGetPowerManagementLimit"] = 650_000

    gpus = NvidiaBackend(RecordedNvml(rec)).detect()

    assert [g.power_limit_w for g in gpus] == [650, 700]


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "libnvidia-ml.so.1) is not installed"),
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "kernel driver is not loaded"),
        (pynvml.NVML_ERROR_NO_PERMISSION, "NVML failed to start: Insufficient Permissions"),
    ],
)
def test_nvml_that_cannot_start_says_why(code: int, reason: str) -> None:
    with pytest.raises(BackendUnavailable, match=reason.replace("(", r"\(").replace(")", r"\)")):
        NvidiaBackend(RecordedNvml(recording("h100"), init_error=code)).detect()


def test_a_required_value_failing_is_reported_and_nvml_released() -> None:
    rec = recording("h100")
    rec["devices"][1]["nvmlDeviceGetMemoryInfo"] = None
    nvml = RecordedNvml(rec)

    with pytest.raises(BackendUnavailable, match="NVML could not describe the GPUs: Not Supported"):
        NvidiaBackend(nvml).detect()
    assert nvml.shutdowns == 1


def test_no_devices_gives_an_empty_list() -> None:
    rec = recording("h100")
    rec["devices"] = []

    assert NvidiaBackend(RecordedNvml(rec)).detect() == []


def test_the_real_library_on_this_machine_reports_a_reason_or_gpus() -> None:
    # Without a GPU (CI), the real pynvml must fail cleanly with a reason, never crash.
    reason = ""
    try:
        gpus = NvidiaBackend().detect()
    except BackendUnavailable as exc:
        reason, gpus = str(exc), []
    assert reason or gpus
    assert all(g.vendor == "nvidia" and not g.simulated for g in gpus)
