"""Intel data center and Arc GPUs through `xpu-smi discovery` (best effort).

The device list carries name, UUID and PCI address; memory is only in each device's detail,
so it costs one more call per GPU and is 0 when the detail does not report it.
"""

from __future__ import annotations

import json
import re
from typing import Final

import msgspec

from dante.agent.gpus.backend import BackendUnavailable
from dante.agent.gpus.tools import ToolRunner, as_int, reported, run_tool
from dante.schemas.values import Gpu

DISCOVERY_ARGS: Final = ("xpu-smi", "discovery", "-j")

_MIB: Final = 1024 * 1024
_TRADEMARKS: Final = re.compile(r"\((?:R|TM)\)", re.IGNORECASE)


class IntelBackend:
    """Finds Intel GPUs with xpu-smi; `runner` runs the tool (tests replay recordings)."""

    name = "intel"

    def __init__(self, runner: ToolRunner = run_tool) -> None:
        self._run = runner

    def detect(self) -> list[Gpu]:
        devices = parse_discovery(self._run(DISCOVERY_ARGS))
        gpus = []
        for device in devices:
            try:
                detail = self._run((*DISCOVERY_ARGS[:2], "-d", str(device.index), "-j"))
            except BackendUnavailable:
                detail = ""
            gpus.append(device if not detail else _with_memory(device, detail))
        return gpus


def parse_discovery(output: str) -> list[Gpu]:
    """The GPUs of `xpu-smi discovery -j`, without memory (the list does not carry it)."""
    document = _json(output)
    devices = document.get("device_list")
    if not isinstance(devices, list):
        raise BackendUnavailable("xpu-smi printed no device_list")
    gpus: list[Gpu] = []
    for position, device in enumerate(devices):
        if not isinstance(device, dict):
            continue
        if str(device.get("device_type", "GPU")).upper() != "GPU":
            continue
        index = as_int(device.get("device_id"))
        index = position if index is None else index
        bus = reported(device.get("pci_bdf_address"))
        gpus.append(
            Gpu(
                index=index,
                uuid=reported(device.get("uuid")) or f"INTEL-PCI-{bus or index}",
                vendor="intel",
                model=_model(reported(device.get("device_name"))),
                vram_mb=_memory_mb(device),
                pci_bus_id=bus,
            )
        )
    return gpus


def _with_memory(gpu: Gpu, detail: str) -> Gpu:
    try:
        memory = _memory_mb(_json(detail))
    except BackendUnavailable:
        return gpu
    return gpu if memory == 0 else msgspec.structs.replace(gpu, vram_mb=memory)


def _memory_mb(device: dict[str, object]) -> int:
    size = as_int(device.get("memory_physical_size_byte"))
    return size // _MIB if size is not None and size > 0 else 0


def _model(name: str | None) -> str:
    if name is None:
        return "Intel GPU"
    # "Intel(R) Data Center GPU Max 1550" -> "Intel Data Center GPU Max 1550"
    return " ".join(_TRADEMARKS.sub("", name).split())


def _json(output: str) -> dict[str, object]:
    try:
        document = json.loads(output)
    except json.JSONDecodeError as exc:
        raise BackendUnavailable(f"xpu-smi printed something that is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise BackendUnavailable("xpu-smi printed JSON of an unexpected shape")
    return document
