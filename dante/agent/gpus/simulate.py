"""Simulated GPUs for machines without one: `2xNVIDIA H100 80GB HBM3:80,1xRTX 4090:24`.

Each group is `[COUNTx]MODEL:VRAM_GB`, one GPU when the count is left out. Simulated GPUs say
so (`simulated=True`) in everything the agent reports, and their UUIDs are derived from the
spec, so the same spec always yields the same GPUs.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

from dante.schemas.values import Gpu, Vendor

#: More simulated GPUs than this is a typo, not a machine.
MAX_SIMULATED_GPUS: Final = 64
#: What each group should look like, for error messages.
_EXPECTED: Final = "expected [COUNTx]MODEL:VRAM_GB, e.g. '2xNVIDIA H100 80GB HBM3:80'"
#: The count is a number (ASCII digits, which int() would not insist on) before an x; the
#: VRAM what follows the first colon.
_GROUP: Final = re.compile(
    r"^(?:(?P<count>[+-]?[0-9]+)\s*[xX]\s*)?(?P<model>.*?)\s*(?::(?P<vram>.*))?$"
)
_WHOLE: Final = re.compile(r"[0-9]+")
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
        raise ValueError(f"the simulate spec is empty; {_EXPECTED}")
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
    if not group:
        raise ValueError(f"empty GPU group in the simulate spec; {_EXPECTED}")
    match = _GROUP.match(group)
    if match is None:  # pragma: no cover - the pattern matches any text
        raise ValueError(f"cannot read GPU group {group!r}; {_EXPECTED}")
    model = match["model"].strip()
    count = _count(group, match["count"], model)
    if not model:
        raise ValueError(f"GPU group {group!r} has no model name; {_EXPECTED}")
    if len(model) > 100:
        raise ValueError(f"GPU group {group!r}: the model name is longer than 100 characters")
    if match["vram"] is None:
        raise ValueError(f"GPU group {group!r} gives no VRAM; {_EXPECTED}")
    return count, model, _vram_gb(group, match["vram"].strip())


def _count(group: str, text: str | None, model: str) -> int:
    if text is None:
        if model[:1] in ("x", "X"):
            # `xH100:80`: the count was left out, not a model named so. A model whose name
            # begins with an x is still named, with a count: `1xXavier:32`.
            raise ValueError(
                f"GPU group {group!r} has no count before its 'x'; {_EXPECTED} (to name a "
                "model that begins with x, give its count: '1xXavier:32')"
            )
        return 1
    count = int(text)
    if count < 1:
        raise ValueError(
            f"GPU group {group!r} asks for {count} GPUs; the count must be at least 1; {_EXPECTED}"
        )
    return count


def _vram_gb(group: str, text: str) -> int:
    if not _WHOLE.fullmatch(text):
        raise ValueError(
            f"GPU group {group!r}: VRAM must be a whole number of GB, not {text!r}; {_EXPECTED}"
        )
    vram_gb = int(text)
    if not 1 <= vram_gb <= 16_384:
        raise ValueError(
            f"GPU group {group!r}: VRAM must be between 1 and 16384 GB, not {vram_gb}; {_EXPECTED}"
        )
    return vram_gb


def _uuid(model: str, vram_gb: int, index: int) -> str:
    digest = hashlib.sha256(f"{model}\x00{vram_gb}\x00{index}".encode()).hexdigest()
    return f"SIM-{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"
