"""The NVML recordings say exactly what the raw nvidia-smi outputs they came from say."""

from __future__ import annotations

import re

import pytest

from tests.agent.recorded_nvml import FIXTURES, recording

MIB = 1024 * 1024


def _gpu_blocks(name: str) -> tuple[str, list[str]]:
    text = (FIXTURES / name).read_text()
    head, *blocks = re.split(r"\n(?=GPU [0-9A-F]{8}:)", text)
    return head, blocks


def _search(pattern: str, text: str) -> re.Match[str]:
    match = re.search(pattern, text)
    assert match is not None, pattern
    return match


def _field(block: str, label: str) -> str:
    match = re.search(rf"^\s+{re.escape(label)}\s+: (.+)$", block, re.MULTILINE)
    assert match is not None, label
    return match.group(1).strip()


@pytest.mark.parametrize(
    ("machine", "smi", "device_query"),
    [
        ("h100", "h100-sxm-nvidia-smi-q.txt", "h100-sxm-deviceQuery.txt"),
        ("rtx4090", "rtx4090-nvidia-smi-q.txt", "rtx4090-deviceQuery.txt"),
    ],
)
def test_recording_matches_nvidia_smi(machine: str, smi: str, device_query: str) -> None:
    rec = recording(machine)
    head, blocks = _gpu_blocks(smi)

    assert rec["nvmlSystemGetDriverVersion"] == _search(r"Driver Version\s+: (\S+)", head)[1]
    major, minor = _search(r"CUDA Version\s+: (\d+)\.(\d+)", head).groups()
    assert rec["nvmlSystemGetCudaDriverVersion_v2"] == int(major) * 1000 + int(minor) * 10
    capability = _search(
        r"CUDA Capability Major/Minor version number:\s+(\d+)\.(\d+)",
        (FIXTURES / device_query).read_text(),
    ).groups()

    assert len(rec["devices"]) == len(blocks)
    for device, block in zip(rec["devices"], blocks, strict=True):
        assert device["nvmlDeviceGetName"] == _field(block, "Product Name")
        assert device["nvmlDeviceGetUUID"] == _field(block, "GPU UUID")
        assert device["nvmlDeviceGetPciInfo"]["busId"] == _field(block, "Bus Id")
        memory = device["nvmlDeviceGetMemoryInfo"]
        fb = block.split("FB Memory Usage", 1)[1]
        assert memory["total"] == int(_field(fb, "Total").removesuffix(" MiB")) * MIB
        assert memory["free"] == int(_field(fb, "Free").removesuffix(" MiB")) * MIB
        assert memory["used"] == memory["total"] - memory["free"]
        watts = {
            "nvmlDeviceGetEnforcedPowerLimit": "Current Power Limit",
            "nvmlDeviceGetPowerManagementLimit": "Requested Power Limit",
            "nvmlDeviceGetPowerUsage": "Power Draw",
        }
        for call, label in watts.items():
            assert device[call] == round(float(_field(block, label).removesuffix(" W")) * 1000)
        assert device["nvmlDeviceGetTemperature"] == int(
            _field(block, "GPU Current Temp").removesuffix(" C")
        )
        utilization = block.split("Utilization", 1)[1]
        assert device["nvmlDeviceGetUtilizationRates"] == {
            "gpu": int(_field(utilization, "Gpu").removesuffix(" %")),
            "memory": int(_field(utilization, "Memory").removesuffix(" %")),
        }
        assert device["nvmlDeviceGetCudaComputeCapability"] == [int(c) for c in capability]
