"""Apple Silicon GPUs through `system_profiler SPDisplaysDataType -json` and `sysctl hw.memsize`.

The GPU shares the machine's memory, so its "VRAM" is the unified memory. Apple reports no
per-GPU identifier; a Mac has exactly one such GPU, so its id is derived from the chip name.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Final

from dante.agent.gpus.backend import BackendUnavailable
from dante.agent.gpus.tools import ToolRunner, as_int, reported, run_tool
from dante.schemas.values import Gpu

SYSTEM_PROFILER_ARGS: Final = ("system_profiler", "SPDisplaysDataType", "-json")
MEMSIZE_ARGS: Final = ("sysctl", "-n", "hw.memsize")

_MIB: Final = 1024 * 1024


class AppleBackend:
    """Finds the GPU of an Apple Silicon Mac; `runner` runs the tools (tests replay recordings)."""

    name = "apple"

    def __init__(self, runner: ToolRunner = run_tool, *, platform: str = sys.platform) -> None:
        self._run = runner
        self._platform = platform

    def detect(self) -> list[Gpu]:
        if self._platform != "darwin":
            raise BackendUnavailable("Apple GPUs are found only on macOS")
        displays = self._run(SYSTEM_PROFILER_ARGS)
        memory = as_int(self._run(MEMSIZE_ARGS))
        return parse_system_profiler(displays, unified_memory_bytes=memory)


def parse_system_profiler(output: str, *, unified_memory_bytes: int | None) -> list[Gpu]:
    """The Apple GPUs in `system_profiler SPDisplaysDataType -json` output."""
    try:
        document = json.loads(output)
    except json.JSONDecodeError as exc:
        raise BackendUnavailable(
            f"system_profiler printed something that is not JSON: {exc}"
        ) from exc
    items = document.get("SPDisplaysDataType") if isinstance(document, dict) else None
    if not isinstance(items, list):
        raise BackendUnavailable("system_profiler printed no SPDisplaysDataType list")
    vram_mb = unified_memory_bytes // _MIB if unified_memory_bytes else 0
    gpus: list[Gpu] = []
    for item in items:
        if not isinstance(item, dict) or not _is_apple_gpu(item):
            continue
        model = _model(item)
        gpus.append(
            Gpu(
                index=len(gpus),
                uuid=f"APPLE-{re.sub(r'[^A-Za-z0-9]+', '-', model).strip('-')}-{len(gpus)}",
                vendor="apple",
                model=model,
                vram_mb=vram_mb,
                cores=as_int(item.get("sppci_cores")),
            )
        )
    return gpus


def _is_apple_gpu(item: dict[str, object]) -> bool:
    vendor = str(item.get("spdisplays_vendor", "")).lower()
    model = str(item.get("sppci_model", "")).lower()
    # Intel Macs list Intel or AMD GPUs here too; those are not Apple Silicon.
    return "apple" in vendor or model.startswith("apple")


def _model(item: dict[str, object]) -> str:
    # "_name" was an internal key ("kHW_AppleM1Item") on early Apple Silicon macOS releases;
    # "sppci_model" has always held the chip name.
    for key in ("sppci_model", "_name"):
        name = reported(item.get(key))
        if name is not None and not name.startswith("kHW_"):
            return name
    return "Apple GPU"
