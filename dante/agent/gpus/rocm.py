"""AMD GPUs through `rocm-smi --json`.

rocm-smi has renamed its keys across ROCm releases ("Card series", "Card Series", "Device
Name"), so keys are matched case-insensitively against a few known spellings, and any value may
be missing or "N/A".
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Final

from dante.agent.gpus.backend import BackendUnavailable
from dante.agent.gpus.tools import ToolRunner, as_int, reported, run_tool
from dante.schemas.values import Gpu

ROCM_SMI_ARGS: Final = (
    "rocm-smi",
    "--showproductname",
    "--showmeminfo",
    "vram",
    "--showuniqueid",
    "--showbus",
    "--showmaxpower",
    "--showdriverversion",
    "--json",
)

_CARD: Final = re.compile(r"^card(\d+)$", re.IGNORECASE)
_MIB: Final = 1024 * 1024
# Most specific first: "Card Series" holds the marketing name on ROCm 5 and early 6; ROCm 6.2+
# prints "Device Name" (often the chip family); "Card Model" is usually a PCI id like 0x744c.
_NAME_KEYS: Final = ("card series", "device name", "card model")
_VRAM_KEYS: Final = ("vram total memory (b)",)
_UNIQUE_ID_KEYS: Final = ("unique id",)
_BUS_KEYS: Final = ("pci bus",)
_POWER_CAP_KEYS: Final = ("max graphics package power (w)",)
_DRIVER_KEYS: Final = ("driver version",)


class AmdBackend:
    """Finds AMD GPUs by running rocm-smi; `runner` runs the tool (tests replay recordings)."""

    name = "amd"

    def __init__(self, runner: ToolRunner = run_tool) -> None:
        self._run = runner

    def detect(self) -> list[Gpu]:
        return parse_rocm_smi(self._run(ROCM_SMI_ARGS))


def parse_rocm_smi(output: str) -> list[Gpu]:
    """The GPUs in rocm-smi's JSON output, ordered by card number."""
    try:
        document = json.loads(output)
    except json.JSONDecodeError as exc:
        raise BackendUnavailable(f"rocm-smi printed something that is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise BackendUnavailable("rocm-smi printed JSON of an unexpected shape")
    driver = reported(_lookup(_fields(document.get("system")), _DRIVER_KEYS))
    cards: list[tuple[int, Mapping[str, object]]] = []
    for key, value in document.items():
        match = _CARD.match(str(key))
        if match is not None and isinstance(value, dict):
            cards.append((int(match.group(1)), _fields(value)))
    return [_gpu(number, fields, driver) for number, fields in sorted(cards)]


def _gpu(number: int, fields: Mapping[str, object], driver: str | None) -> Gpu:
    vram = as_int(_lookup(fields, _VRAM_KEYS))
    bus = reported(_lookup(fields, _BUS_KEYS))
    unique = reported(_lookup(fields, _UNIQUE_ID_KEYS))
    power = as_int(_lookup(fields, _POWER_CAP_KEYS))
    return Gpu(
        index=number,
        # rocm-smi has no GPU UUID; its "Unique ID" (when the card reports one) is the closest.
        uuid=unique or (f"AMD-PCI-{bus}" if bus else f"AMD-card{number}"),
        vendor="amd",
        model=_model(reported(_lookup(fields, _NAME_KEYS))),
        vram_mb=(vram // _MIB) if vram is not None and vram >= 0 else 0,
        driver_version=driver,
        power_limit_w=power if power is not None and power >= 0 else None,
        pci_bus_id=bus,
    )


def _model(name: str | None) -> str:
    if name is None:
        return "AMD GPU"
    # "Radeon RX 7900 XT" -> "AMD Radeon RX 7900 XT", so model names say who made them.
    return name if "amd" in name.lower() else f"AMD {name}"


def _fields(value: object) -> dict[str, object]:
    if not isinstance(value, dict):
        return {}
    return {str(key).strip().lower(): item for key, item in value.items()}


def _lookup(fields: Mapping[str, object], keys: tuple[str, ...]) -> object:
    for key in keys:
        value = reported(fields.get(key))
        if value is not None:
            return value
    return None
