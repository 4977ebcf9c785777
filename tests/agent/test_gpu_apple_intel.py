"""Apple Silicon (system_profiler) and Intel (xpu-smi) detection from recorded outputs."""

from __future__ import annotations

import json

import pytest

from dante.agent.gpus import BackendUnavailable
from dante.agent.gpus.apple import (
    MEMSIZE_ARGS,
    SYSTEM_PROFILER_ARGS,
    AppleBackend,
    parse_system_profiler,
)
from dante.agent.gpus.intel import DISCOVERY_ARGS, IntelBackend, parse_discovery
from tests.agent.tools import Replay, fixture

GIB = 1024**3


def test_apple_m1_gets_its_chip_name_cores_and_unified_memory() -> None:
    replay = Replay(
        {
            SYSTEM_PROFILER_ARGS: fixture("apple/m1-spdisplaysdatatype.json"),
            MEMSIZE_ARGS: f"{16 * GIB}\n",
        }
    )

    [gpu] = AppleBackend(replay, platform="darwin").detect()

    # "_name" is "kHW_AppleM1Item" in this recording; the model comes from sppci_model.
    assert gpu.model == "Apple M1"
    assert gpu.vendor == "apple"
    assert gpu.cores == 7
    assert gpu.vram_mb == 16 * 1024
    assert gpu.uuid == "APPLE-Apple-M1-0"


def test_apple_backend_is_not_tried_outside_macos() -> None:
    replay = Replay({})

    with pytest.raises(BackendUnavailable, match="only on macOS"):
        AppleBackend(replay, platform="linux").detect()
    assert replay.calls == []


def test_intel_and_amd_gpus_of_an_intel_mac_are_not_apple_gpus() -> None:
    output = json.dumps(
        {
            "SPDisplaysDataType": [
                {"_name": "Intel Iris Pro", "sppci_model": "Intel Iris Pro"},
                {"_name": "AMD Radeon Pro 5300M", "sppci_model": "AMD Radeon Pro 5300M"},
            ]
        }
    )

    assert parse_system_profiler(output, unified_memory_bytes=16 * GIB) == []


def test_system_profiler_output_that_is_not_json_is_a_reason() -> None:
    with pytest.raises(BackendUnavailable, match="not JSON"):
        parse_system_profiler("Graphics/Displays:", unified_memory_bytes=None)


def test_intel_discovery_list() -> None:
    [gpu] = parse_discovery(fixture("intel/xpu-smi-discovery-j.json"))

    assert gpu.vendor == "intel"
    assert gpu.model == "Intel Graphics [0x020a]"
    assert gpu.uuid == "00000000-0000-0000-0000-020a00008086"
    assert gpu.pci_bus_id == "0000:4d:00.0"
    assert gpu.index == 0
    assert gpu.vram_mb == 0


def test_intel_memory_comes_from_each_device_detail() -> None:
    detail = ("xpu-smi", "discovery", "-d", "0", "-j")
    replay = Replay(
        {
            DISCOVERY_ARGS: fixture("intel/xpu-smi-discovery-j.json"),
            # Shape of the detail as xpumanager names the field; not a recorded output.
            detail: '{"device_id": 0, "memory_physical_size_byte": "34359738368"}',
        }
    )

    [gpu] = IntelBackend(replay).detect()

    assert replay.calls == [DISCOVERY_ARGS, detail]
    assert gpu.vram_mb == 32 * 1024


def test_intel_gpu_stays_listed_when_its_detail_fails() -> None:
    replay = Replay({DISCOVERY_ARGS: fixture("intel/xpu-smi-discovery-j.json")})

    [gpu] = IntelBackend(replay).detect()

    assert gpu.vram_mb == 0
