"""Suggested prices and model matching: the reference table, the formula, normalisation."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dante.domain.pricing import (
    DEFAULT_BASE,
    REFERENCE_PRICES,
    REFERENCE_TABLE,
    ModelPattern,
    PriceTable,
    model_matches,
    model_tokens,
    normalize_model,
    suggest_gpu_price,
    suggest_price,
    whole_gb,
)
from dante.schemas.values import Gpu

# (the rule's name, a name as a detector reports it, the base in µdGPU per GPU-hour)
REFERENCE = [
    ("RTX 4090", "NVIDIA GeForce RTX 4090", 500_000),
    ("RTX 4080", "NVIDIA GeForce RTX 4080", 400_000),
    ("RTX 4070", "NVIDIA GeForce RTX 4070", 300_000),
    ("RTX 3090", "NVIDIA GeForce RTX 3090", 450_000),
    ("RTX 3080", "NVIDIA GeForce RTX 3080", 350_000),
    ("A100", "NVIDIA A100-SXM4-80GB", 2_000_000),
    ("V100", "Tesla V100-SXM2-16GB", 1_500_000),
    ("H100", "NVIDIA H100 80GB HBM3", 4_000_000),
    ("L40", "NVIDIA L40", 1_800_000),
    ("AMD MI250X", "AMD Instinct MI250X", 1_750_000),
    ("AMD 7900 XTX", "Radeon RX 7900 XTX", 350_000),
    ("AMD 6900 XT", "AMD Radeon RX 6900 XT", 300_000),
    ("Apple M1 Max", "Apple M1 Max", 250_000),
    ("M1 Ultra", "Apple M1 Ultra", 450_000),
    ("M2 Max", "Apple M2 Max", 300_000),
    ("M2 Ultra", "Apple M2 Ultra", 550_000),
    ("M3 Max", "Apple M3 Max", 350_000),
    ("M3 Ultra", "Apple M3 Ultra", 650_000),
    ("Intel Arc A770", "Intel(R) Arc(TM) A770 Graphics", 200_000),
    ("Intel Data Center GPU Max", "Intel(R) Data Center GPU Max 1550", 1_200_000),
]


def test_the_reference_table_has_the_twenty_published_models() -> None:
    assert len(REFERENCE_PRICES) == 20
    assert sorted(REFERENCE_PRICES) == sorted((rule, base) for rule, _, base in REFERENCE)
    assert DEFAULT_BASE == 250_000


@pytest.mark.parametrize(("rule", "detected", "base"), REFERENCE)
def test_every_model_gets_its_published_base(rule: str, detected: str, base: int) -> None:
    for name in (rule, detected):
        suggestion = suggest_price(name)
        assert suggestion.rule == rule, name
        assert suggestion.base == base
        assert suggestion.total == base


@pytest.mark.parametrize(
    "model",
    ["Tesla T4", "NVIDIA H200", "GeForce GTX 1080 Ti", "NVIDIA RTX A6000", "Apple M2", "x", ""],
)
def test_anything_else_gets_the_default(model: str) -> None:
    suggestion = suggest_price(model, 16, 70)
    assert suggestion.rule is None
    assert suggestion.base == 250_000
    assert suggestion.total == 250_000 + 16 * 20_000 + 70


def test_the_formula_in_integer_microdgpu() -> None:
    # 0.50 + 24 GB x 0.02 + 450 W x 0.001/kW = 0.50 + 0.48 + 0.00045 dGPU
    s = suggest_price("RTX 4090", vram_gb=24, power_w=450)
    assert (s.base, s.vram_part, s.power_part, s.total) == (500_000, 480_000, 450, 980_450)
    assert (s.vram_gb, s.power_w, s.model) == (24, 450, "RTX 4090")
    h100 = suggest_price("NVIDIA H100 80GB HBM3", 80, 700)
    assert h100.total == 4_000_000 + 1_600_000 + 700
    assert suggest_price("M2 Ultra", 192).total == 550_000 + 192 * 20_000


def test_unknown_vram_or_power_adds_nothing() -> None:
    s = suggest_price("RTX 4090")
    assert (s.vram_part, s.power_part, s.total) == (0, 0, 500_000)


def test_negative_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        suggest_price("RTX 4090", -1)
    with pytest.raises(ValueError, match="negative"):
        suggest_price("RTX 4090", 24, -5)


def test_a_detected_gpu_is_priced_from_its_vram_and_power_limit() -> None:
    gpu = Gpu(
        index=0,
        uuid="GPU-1",
        vendor="nvidia",
        model="NVIDIA GeForce RTX 4090",
        vram_mb=24564,  # 23.99 GiB -> 24 GB
        power_limit_w=450,
    )
    assert suggest_gpu_price(gpu).total == 980_450
    no_power = Gpu(index=0, uuid="u", vendor="apple", model="Apple M2 Ultra", vram_mb=196_608)
    assert suggest_gpu_price(no_power).total == 550_000 + 192 * 20_000


@given(st.integers(min_value=0, max_value=16_777_216))
def test_whole_gb_is_the_rule_of_gpu_vram_gb(vram_mb: int) -> None:
    gpu = Gpu(index=0, uuid="u", vendor="nvidia", model="m", vram_mb=vram_mb)
    assert whole_gb(vram_mb) == gpu.vram_gb


# ── normalisation ─────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("name", "normal"),
    [
        ("NVIDIA GeForce RTX 4090", "rtx 4090"),
        ("rtx4090", "rtx 4090"),
        ("RTX 4090 24GB", "rtx 4090"),
        ("  RTX-4090 (24 GB GDDR6X) ", "rtx 4090"),
        ("NVIDIA H100 80GB HBM3", "h100"),
        ("H100 PCIe", "h100 pcie"),
        ("NVIDIA A100-SXM4-80GB", "a100 sxm 4"),
        ("H 100", "h100"),
        ("Apple M2 Ultra", "m2 ultra"),
        ("m2ultra", "m2 ultra"),
        ("AMD Instinct MI250X", "instinct mi 250 x"),
        ("Radeon RX 7900 XTX", "rx 7900 xtx"),
        ("7900XTX", "7900 xtx"),
        ("Intel(R) Arc(TM) A770 Graphics", "arc a770"),
        ("Intel® Data Center GPU Max 1550", "data center gpu max 1550"),
        ("H200 141GB HBM3e", "h200"),
        ("NVIDIA", ""),
    ],
)
def test_normalize_model(name: str, normal: str) -> None:
    assert normalize_model(name) == normal


_WORDS = st.sampled_from(
    ["nvidia", "RTX", "4090", "a", "100", "GB", "hbm", "3", "e", "x", "Max", "(TM)", "m2", "-"]
)
_NAMES = st.one_of(
    st.text(alphabet="aAbexgGmM0123456789 -_.()", max_size=30),
    st.lists(_WORDS, max_size=8).map(" ".join),
    st.lists(_WORDS, max_size=8).map("".join),
)


@given(_NAMES)
def test_normalising_is_idempotent_and_a_name_matches_itself(name: str) -> None:
    normal = normalize_model(name)
    assert normalize_model(normal) == normal
    assert normalize_model(name.upper()) == normalize_model(name.lower())
    if normal:
        assert model_matches(name, name)
        assert model_matches(normal, name)
        assert model_matches("=" + normal, name)


@pytest.mark.parametrize(
    ("requested", "model", "expected"),
    [
        ("H100", "NVIDIA H100 80GB HBM3", True),
        ("H100", "H100 PCIe", True),
        ("H100", "NVIDIA H100 NVL", True),
        ("h100 pcie", "NVIDIA H100 PCIe", True),
        ("H100 PCIe", "NVIDIA H100 80GB HBM3", False),
        ("RTX 4090", "NVIDIA GeForce RTX 4090", True),
        ("rtx4090", "NVIDIA GeForce RTX 4090", True),
        ("GeForce RTX 4090", "RTX 4090", True),
        ("RTX", "NVIDIA GeForce RTX 4090", True),
        ("RTX", "NVIDIA RTX A6000", True),
        ("RTX", "Tesla V100-SXM2-16GB", False),
        ("A100", "NVIDIA A100-SXM4-80GB", True),
        ("A100", "NVIDIA RTX A1000", False),
        ("A10", "NVIDIA A100-SXM4-80GB", False),
        ("A10", "NVIDIA A10", True),
        ("M2", "Apple M2", True),
        ("M2", "Apple M2 Max", True),
        ("M2", "Apple M2 Ultra", True),
        ("M2", "Apple M1 Max", False),
        ("M2 Max", "Apple M2 Ultra", False),
        ("M1 Max", "Apple M1 Ultra", False),
        ("4090", "NVIDIA GeForce RTX 4090", True),
        ("409", "NVIDIA GeForce RTX 4090", False),
        ("RTX 40", "NVIDIA GeForce RTX 4090", False),
        # The tokens must appear in order and together.
        ("4090 RTX", "NVIDIA GeForce RTX 4090", False),
        ("Max M2", "Apple M2 Max", False),
        ("RTX SUPER", "NVIDIA GeForce RTX 4080 SUPER", False),
        ("MI250X", "AMD Instinct MI250X", True),
        ("7900 XTX", "AMD Radeon RX 7900 XTX", True),
        ("7900 XT", "AMD Radeon RX 7900 XTX", False),
        ("Arc A770", "Intel(R) Arc(TM) A770 Graphics", True),
        # A family includes its variants: RTX 4080 admits the 4080 SUPER ...
        ("RTX 4080", "NVIDIA GeForce RTX 4080 SUPER", True),
        ("RTX 4080 SUPER", "NVIDIA GeForce RTX 4080", False),
        # ... and "=" asks for exactly that model.
        ("=RTX 4080", "NVIDIA GeForce RTX 4080 SUPER", False),
        ("=RTX 4080", "NVIDIA GeForce RTX 4080", True),
        ("=H100", "NVIDIA H100 80GB HBM3", True),
        # Only vendor words: matched against names with their vendor words kept.
        ("NVIDIA", "NVIDIA GeForce RTX 4090", True),
        ("AMD Radeon", "AMD Radeon RX 7900 XTX", True),
        ("AMD", "NVIDIA GeForce RTX 4090", False),
        # Nothing to match on: matches nothing.
        ("24GB", "NVIDIA GeForce RTX 4090 24GB", False),
        ("!!", "NVIDIA GeForce RTX 4090", False),
    ],
)
def test_model_matches(requested: str, model: str, expected: bool) -> None:
    assert model_matches(requested, model) is expected
    assert ModelPattern(requested).matches(model) is expected


# ── the most specific rule wins, whatever the table's order ───────────────────────────────


@pytest.mark.parametrize(
    ("model", "rule"),
    [
        ("NVIDIA GeForce RTX 4090", "RTX 4090"),
        ("rtx4090", "RTX 4090"),
        ("RTX 4090 24GB", "RTX 4090"),
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("H100 PCIe", "H100"),
        ("Apple M2 Ultra", "M2 Ultra"),
        ("Apple M2 Max", "M2 Max"),
        ("M1 Max", "Apple M1 Max"),
        ("M1 Ultra", "M1 Ultra"),
        ("AMD Instinct MI250X", "AMD MI250X"),
        ("Radeon RX 7900 XTX", "AMD 7900 XTX"),
        ("Intel Arc A770", "Intel Arc A770"),
        ("Intel Data Center GPU Max 1550", "Intel Data Center GPU Max"),
        # Variants take their family's rule (documented decision).
        ("NVIDIA GeForce RTX 4080 SUPER", "RTX 4080"),
        ("NVIDIA GeForce RTX 3080 Ti", "RTX 3080"),
        ("NVIDIA L40S", "L40"),
        # Not a variant: different tokens.
        ("NVIDIA L4", None),
        ("NVIDIA A10", None),
        ("NVIDIA RTX A1000", None),
        ("AMD Radeon RX 7900 XT", None),
        ("Apple M2", None),
    ],
)
def test_reference_rule_matching(model: str, rule: str | None) -> None:
    match = REFERENCE_TABLE.match(model)
    assert (None if match is None else match.name) == rule


NESTED = [
    ("RTX", 100),
    ("RTX 4090", 200),
    ("RTX 4090 D", 300),
    ("GeForce RTX 4090 D v2", 400),
    ("4090", 50),
    ("H100", 1000),
    ("H100 PCIe", 900),
    ("H100 NVL", 1100),
]
NESTED_CASES = [
    ("NVIDIA GeForce RTX 4090", 200),
    ("NVIDIA GeForce RTX 4090 D", 300),
    ("RTX 4090 D v2", 400),
    ("RTX 3090", 100),
    ("Quadro 4090", 50),
    ("NVIDIA H100 80GB HBM3", 1000),
    ("NVIDIA H100 PCIe", 900),
    ("H100 NVL 94GB", 1100),
    ("Tesla T4", None),
]


@given(st.permutations(NESTED), st.randoms())
def test_the_most_specific_rule_wins_in_any_order(
    rules: list[tuple[str, int]], rng: random.Random
) -> None:
    table = PriceTable(rules)
    for model, base in NESTED_CASES:
        match = table.match(model)
        assert (None if match is None else match.base) == base, model
    reference = list(REFERENCE_PRICES)
    rng.shuffle(reference)
    shuffled = PriceTable(reference)
    assert shuffled.rules == REFERENCE_TABLE.rules
    for _, detected, base in REFERENCE:
        assert suggest_price(detected, table=shuffled).base == base


def test_rules_are_ordered_by_their_own_specificity() -> None:
    table = PriceTable(NESTED)
    assert [r.name for r in table.rules][:2] == ["GeForce RTX 4090 D v2", "RTX 4090 D"]
    keys = [r.specificity for r in REFERENCE_TABLE.rules]
    assert keys == sorted(keys, reverse=True)
    assert REFERENCE_TABLE.rules[0].tokens == model_tokens("Data Center GPU Max")


def test_a_table_refuses_duplicate_or_empty_rules() -> None:
    with pytest.raises(ValueError, match="are the same"):
        PriceTable([("RTX 4090", 1), ("NVIDIA GeForce rtx4090", 2)])
    with pytest.raises(ValueError, match="names no model"):
        PriceTable([("NVIDIA 24GB", 1)])
    with pytest.raises(ValueError, match="negative"):
        PriceTable([("RTX 4090", -1)])
