"""Simulated GPUs for machines without one: `2xNVIDIA H100 80GB HBM3:80,1xRTX 4090:24`.

Each group is `[COUNT x]MODEL:VRAM_GB`. Simulated GPUs say so (`simulated=True`) in everything
the agent reports, and their UUIDs are derived from the spec, so the same spec always yields
the same GPUs.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

from dante.schemas.values import Gpu, Vendor

#: More simulated GPUs than this is a typo, not a machine.
MAX_SIMULATED_GPUS: Final = 64
_GROUP: Final = re.compile(
    r"^(?:(?P<count>[+-]?\d+)\s*[xX]\s*)?(?P<model>.*?)\s*(?::(?P<vram>.*))?$"
)
# Checked in this order; the first vendor whose pattern matches the model name wins.
_VENDOR_PATTERNS: Final[tuple[tuple[Vendor, re.Pattern[str]], ...]] = (
    ("nvidia", re.compile(r"\b(nvidia|geforce|rtx|gtx|tesla|quadro)\b", re.IGNORECASE)),
    ("amd", re.compile(r"\b(amd|radeon|instinct|mi\d{2,3}x?)\b", re.IGNORECASE)),
    ("apple", re.compile(r"\b(apple|m[1-9](\s+(pro|max|ultra))?)\b", re.IGNORECASE)),
    ("intel", re.compile(r"\b(intel|arc|data center gpu (max|flex))\b", re.IGNORECASE)),
)


def parse_simulate(spec: str) -> list[Gpu]:
    """The GPUs a `--simulate` spec describes, indexed 0..n-1; ValueError says what is wrong."""
    if not spec.strip():
        raise ValueError("the simulate spec is empty; expected e.g. '2xNVIDIA H100 80GB HBM3:80'")
    gpus: list[Gpu] = []
    for group in spec.split(","):
        count, model, vram_gb = _parse_group(group.strip())
        if len(gpus) + count > MAX_SIMULATED_GPUS:
            raise ValueError(f"at most {MAX_SIMULATED_GPUS} simulated GPUs, the spec asks for more")
        for _ in range(count):
            index = len(gpus)
            gpus.append(
                Gpu(
                    index=index,
                    uuid=_uuid(model, vram_gb, index),
                    vendor=infer_vendor(model),
                    model=model,
                    vram_mb=vram_gb * 1024,
                    simulated=True,
                )
            )
    return gpus


def infer_vendor(model: str) -> Vendor:
    """The vendor a model name suggests; NVIDIA when nothing says otherwise."""
    for vendor, pattern in _VENDOR_PATTERNS:
        if pattern.search(model):
            return vendor
    return "nvidia"


def _parse_group(group: str) -> tuple[int, str, int]:
    example = "expected COUNTxMODEL:VRAM_GB, e.g. '2xNVIDIA H100 80GB HBM3:80'"
    if not group:
        raise ValueError(f"empty GPU group in the simulate spec; {example}")
    match = _GROUP.match(group)
    if match is None:  # pragma: no cover - the pattern matches any text
        raise ValueError(f"cannot read GPU group {group!r}; {example}")
    count = int(match["count"]) if match["count"] is not None else 1
    model = match["model"].strip()
    if count < 1:
        raise ValueError(f"GPU group {group!r} asks for {count} GPUs; the count must be at least 1")
    if not model:
        raise ValueError(f"GPU group {group!r} has no model name; {example}")
    if len(model) > 100:
        raise ValueError(f"GPU group {group!r}: the model name is longer than 100 characters")
    if match["vram"] is None:
        raise ValueError(f"GPU group {group!r} gives no VRAM; {example}")
    vram_text = match["vram"].strip()
    if not vram_text.isdigit():
        raise ValueError(
            f"GPU group {group!r}: VRAM must be a whole number of GB, not {vram_text!r}"
        )
    vram_gb = int(vram_text)
    if not 1 <= vram_gb <= 16_384:
        raise ValueError(f"GPU group {group!r}: VRAM must be between 1 and 16384 GB")
    return count, model, vram_gb


def _uuid(model: str, vram_gb: int, index: int) -> str:
    digest = hashlib.sha256(f"{model}\x00{vram_gb}\x00{index}".encode()).hexdigest()
    return f"SIM-{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"
