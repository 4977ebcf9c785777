"""Suggested prices and GPU model matching: pure, deterministic, integer µdGPU.

A suggested price per GPU-hour is `base(model) + 20,000 µdGPU per GB of VRAM + 1 µdGPU per
watt of power draw` (DESIGN.md: 0.02 dGPU per GB, 0.001 dGPU per kW). The base comes from the
most specific rule of a price table whose name matches the GPU's model; a model no rule
matches gets the default base (0.25 dGPU).

Model names are compared as *token sequences* of a normalised name (`normalize_model`):
lower case, vendor and brand words ("NVIDIA", "GeForce", "AMD", "Radeon", "Apple", "Intel",
"(R)", "(TM)", "Graphics") and memory descriptions ("24GB", "80GB HBM3", "GDDR6X") dropped,
punctuation turned into spaces, letters and digits split ("rtx4090" -> "rtx 4090") except that
a single letter keeps the number that follows it ("A100", "M2", "L40" are one token). A
name matches a pattern when the pattern's tokens occur in the name's tokens as one contiguous
run, so "RTX 4090" matches "NVIDIA GeForce RTX 4090", "H100" matches "H100 PCIe", and "A10"
does not match "A100" (different tokens), whatever the spacing or case.

A name is a family of its variants: "RTX 4080" matches "RTX 4080 SUPER" (and its price rule
prices the SUPER, which has no row of its own), "L40" matches "L40S", "MI250" matches
"MI250X". A request written "=RTX 4080" asks for exactly that normalised name instead.
Among several matching rules the one with the most tokens wins, then the longest, then the
name itself, so a table's order never matters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Final

import msgspec

from dante.schemas.values import Gpu

#: 0.02 dGPU per GB of VRAM.
VRAM_UDGPU_PER_GB: Final = 20_000
#: 0.001 dGPU per kW of power draw is 1 µdGPU per watt.
POWER_UDGPU_PER_W: Final = 1
#: The base price of a model no rule matches (0.25 dGPU).
DEFAULT_BASE: Final = 250_000
#: A request starting with this matches only models whose normalised name is the same.
EXACT_PREFIX: Final = "="

#: The reference table (DESIGN.md, "Pricing"): display name and base µdGPU per GPU-hour.
#: The order here means nothing: the most specific matching rule wins.
REFERENCE_PRICES: Final[tuple[tuple[str, int], ...]] = (
    ("RTX 4090", 500_000),
    ("RTX 4080", 400_000),
    ("RTX 4070", 300_000),
    ("RTX 3090", 450_000),
    ("RTX 3080", 350_000),
    ("A100", 2_000_000),
    ("V100", 1_500_000),
    ("H100", 4_000_000),
    ("L40", 1_800_000),
    ("AMD MI250X", 1_750_000),
    ("AMD 7900 XTX", 350_000),
    ("AMD 6900 XT", 300_000),
    ("Apple M1 Max", 250_000),
    ("M1 Ultra", 450_000),
    ("M2 Max", 300_000),
    ("M2 Ultra", 550_000),
    ("M3 Max", 350_000),
    ("M3 Ultra", 650_000),
    ("Intel Arc A770", 200_000),
    ("Intel Data Center GPU Max", 1_200_000),
)

# ── normalisation ─────────────────────────────────────────────────────────────────────────

_NOISE_WORDS: Final = frozenset(
    {"nvidia", "geforce", "amd", "radeon", "apple", "intel", "graphics"}
)
#: Memory sizes are a number followed by one of these ("24GB", "80 GB").
_UNITS: Final = frozenset({"gb", "gib", "tb", "tib", "mb", "mib"})
#: Memory types, with their generation and suffix ("HBM3", "HBM2e", "GDDR6X").
_MEMORY_TYPES: Final = frozenset({"hbm", "gddr", "lpddr", "ddr"})
_MARKS: Final = re.compile(r"\((?:r|tm|c)\)|[®™©]")
_RUNS: Final = re.compile(r"[a-z]+|[0-9]+")


def _split(text: str, *, keep_vendor: bool = False) -> tuple[str, ...]:
    """Tokens: lower case, runs of letters or digits, vendor words and memory dropped.

    One left-to-right pass, so that normalising a normalised name changes nothing: a memory
    type drops itself, its generation digits and an 'e'/'x' suffix; a unit drops itself and
    the number before it; a number after a single letter joins it ('a', '100' -> 'a100').
    """
    out: list[str] = []
    memory = 0  # 1: just dropped a memory type; 2: and its generation
    for run in _RUNS.findall(_MARKS.sub(" ", text.lower())):
        if not keep_vendor and run in _NOISE_WORDS:
            continue
        if (memory == 1 and run.isdigit()) or (memory == 2 and run in {"e", "x"}):
            memory = 0 if memory == 2 else 2
            continue
        memory = 0
        if run in _MEMORY_TYPES:
            memory = 1
        elif run in _UNITS and out and out[-1].isdigit():
            out.pop()
        elif run.isdigit() and out and len(out[-1]) == 1 and out[-1].isalpha():
            out[-1] += run
        else:
            out.append(run)
    return tuple(out)


@lru_cache(maxsize=4096)
def model_tokens(name: str) -> tuple[str, ...]:
    """The tokens of a model name, without vendor words or memory: 'rtx4090' -> ('rtx', '4090')."""
    return _split(name)


def normalize_model(name: str) -> str:
    """The canonical form of a model name: 'NVIDIA GeForce RTX 4090 24GB' -> 'rtx 4090'."""
    return " ".join(model_tokens(name))


def _contains_run(haystack: tuple[str, ...], needle: tuple[str, ...]) -> bool:
    size = len(needle)
    if size == 0 or size > len(haystack):
        return False
    first = needle[0]
    return any(
        haystack[i] == first and haystack[i : i + size] == needle
        for i in range(len(haystack) - size + 1)
    )


class ModelPattern:
    """A requested model or family, parsed once and tested against many GPU model names.

    - "H100", "RTX 4090", "RTX", "M2": a family; matches every model whose tokens contain
      the pattern's tokens as one contiguous run ("RTX 4080" matches "RTX 4080 SUPER").
    - "=RTX 4080": exact; matches only models whose normalised name is the same.
    - A pattern of only vendor words ("NVIDIA", "AMD Radeon") matches names that contain
      those words (vendor words kept on both sides).
    - A pattern with no tokens at all ("24GB", "!!") matches nothing.
    """

    __slots__ = ("exact", "raw", "text", "tokens")

    def __init__(self, requested: str) -> None:
        self.text = requested
        stripped = requested.strip()
        self.exact = stripped.startswith(EXACT_PREFIX)
        if self.exact:
            stripped = stripped[len(EXACT_PREFIX) :]
        tokens = model_tokens(stripped)
        # Only vendor words: keep them, and look for them in the names with theirs kept too.
        self.raw = not tokens
        self.tokens = _split(stripped, keep_vendor=True) if self.raw else tokens

    def matches(self, gpu_model: str) -> bool:
        if not self.tokens:
            return False
        have = _split(gpu_model, keep_vendor=True) if self.raw else model_tokens(gpu_model)
        if self.exact:
            return have == self.tokens
        return _contains_run(have, self.tokens)


def model_matches(requested: str, gpu_model: str) -> bool:
    """Whether a job's `gpu_model` requirement (a model or a family) admits this GPU model."""
    return ModelPattern(requested).matches(gpu_model)


# ── the price table ───────────────────────────────────────────────────────────────────────


class PriceRule(msgspec.Struct, frozen=True, kw_only=True):
    """One row of a price table: a model (or family) name and its base price per GPU-hour."""

    name: str
    base: int
    #: The normalised tokens of `name`, which the rule matches as a contiguous run.
    tokens: tuple[str, ...]

    @property
    def specificity(self) -> tuple[int, int, str]:
        """More tokens first, then more characters, then the name itself (a total order)."""
        key = " ".join(self.tokens)
        return (len(self.tokens), len(key), key)


class PriceTable:
    """Price rules ordered by their own specificity, never by the order they were given in."""

    __slots__ = ("_rules",)

    def __init__(self, rules: Iterable[tuple[str, int]]) -> None:
        built: dict[tuple[str, ...], PriceRule] = {}
        for name, base in rules:
            tokens = model_tokens(name)
            if not tokens:
                raise ValueError(f"price rule {name!r} names no model")
            if base < 0:
                raise ValueError(f"price rule {name!r} has a negative base price")
            if tokens in built:
                raise ValueError(f"price rules {built[tokens].name!r} and {name!r} are the same")
            built[tokens] = PriceRule(name=name, base=base, tokens=tokens)
        self._rules = tuple(sorted(built.values(), key=lambda r: r.specificity, reverse=True))

    @property
    def rules(self) -> tuple[PriceRule, ...]:
        """The rules, most specific first."""
        return self._rules

    def match(self, model: str) -> PriceRule | None:
        """The most specific rule whose tokens occur in the model's tokens, or None."""
        have = model_tokens(model)
        for rule in self._rules:
            if _contains_run(have, rule.tokens):
                return rule
        return None


REFERENCE_TABLE: Final = PriceTable(REFERENCE_PRICES)


class PriceSuggestion(msgspec.Struct, frozen=True, kw_only=True):
    """A suggested price per GPU-hour and how it was made, all in µdGPU."""

    model: str
    #: The matched rule's name, or None when the default base applied.
    rule: str | None
    base: int
    vram_gb: int
    vram_part: int
    power_w: int
    power_part: int
    total: int


def whole_gb(vram_mb: int) -> int:
    """VRAM in whole GB, rounded half up from MiB: the rule of `Gpu.vram_gb`."""
    return (vram_mb + 512) // 1024


def suggest_price(
    model: str,
    vram_gb: int | None = None,
    power_w: int | None = None,
    *,
    table: PriceTable = REFERENCE_TABLE,
) -> PriceSuggestion:
    """The suggested price per GPU-hour: base(model) + 20,000 per GB of VRAM + 1 per watt.

    RTX 4090, 24 GB, 450 W: 500,000 + 480,000 + 450 = 980,450 µdGPU (0.98045 dGPU).
    Unknown VRAM or power adds nothing.
    """
    vram = vram_gb or 0
    power = power_w or 0
    if vram < 0 or power < 0:
        raise ValueError("VRAM and power draw cannot be negative")
    rule = table.match(model)
    base = DEFAULT_BASE if rule is None else rule.base
    vram_part = vram * VRAM_UDGPU_PER_GB
    power_part = power * POWER_UDGPU_PER_W
    return PriceSuggestion(
        model=model,
        rule=None if rule is None else rule.name,
        base=base,
        vram_gb=vram,
        vram_part=vram_part,
        power_w=power,
        power_part=power_part,
        total=base + vram_part + power_part,
    )


def suggest_gpu_price(gpu: Gpu, *, table: PriceTable = REFERENCE_TABLE) -> PriceSuggestion:
    """The suggested price of a detected GPU, from its model, VRAM and power limit."""
    return suggest_price(gpu.model, gpu.vram_gb, gpu.power_limit_w, table=table)
