from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dante.schemas.money import (
    MAX_UDGPU,
    MoneyError,
    cost,
    fee_of,
    format_dgpu,
    parse_dgpu,
)

amounts = st.integers(min_value=1, max_value=MAX_UDGPU)


@pytest.mark.parametrize(
    ("text", "udgpu"),
    [
        ("10", 10_000_000),
        ("0.5", 500_000),
        ("1.000001", 1_000_001),
        (".25", 250_000),
        ("007", 7_000_000),
        ("2.500000", 2_500_000),
        (" 3 ", 3_000_000),
    ],
)
def test_parses_decimal_dgpu_exactly(text: str, udgpu: int) -> None:
    assert parse_dgpu(text) == udgpu


@pytest.mark.parametrize(
    "text",
    [
        "",
        "-1",
        "+1",
        "1e3",
        "1,5",
        "0.0000001",
        "abc",
        "1.2.3",
        "0",
        "0.000000",
        "NaN",
        "inf",
        "1_000",
        "١٢",
    ],
)
def test_refuses_what_is_not_a_positive_whole_number_of_udgpu(text: str) -> None:
    with pytest.raises(MoneyError):
        parse_dgpu(text)


def test_zero_only_when_allowed() -> None:
    assert parse_dgpu("0", allow_zero=True) == 0


def test_refuses_floats_and_amounts_above_the_ceiling() -> None:
    with pytest.raises(MoneyError):
        parse_dgpu(0.5)  # type: ignore[arg-type]
    with pytest.raises(MoneyError):
        parse_dgpu(str(MAX_UDGPU))
    with pytest.raises(MoneyError):
        format_dgpu(1.5)  # type: ignore[arg-type]


@given(amounts)
def test_format_then_parse_is_identity(udgpu: int) -> None:
    assert parse_dgpu(format_dgpu(udgpu)) == udgpu


@given(amounts)
def test_formatting_matches_decimal_arithmetic(udgpu: int) -> None:
    assert Decimal(format_dgpu(udgpu)) == Decimal(udgpu) / Decimal(1_000_000)


@given(st.integers(min_value=0, max_value=10**12), st.integers(min_value=0, max_value=6))
def test_padding_never_rounds(udgpu: int, places: int) -> None:
    text = format_dgpu(udgpu, places=places)
    assert Decimal(text) == Decimal(udgpu) / Decimal(1_000_000)
    assert len(text.partition(".")[2]) >= places


def test_negative_amounts_format_with_a_sign() -> None:
    assert format_dgpu(-1_500_000) == "-1.5"


@given(
    st.integers(min_value=0, max_value=MAX_UDGPU),
    st.lists(st.integers(min_value=0, max_value=3_600_000), max_size=50),
)
def test_charging_running_totals_rounds_the_whole_once(rate: int, ticks: list[int]) -> None:
    charged = 0
    total_ms = 0
    for ms in ticks:
        total_ms += ms
        increment = cost(rate, total_ms) - charged
        assert increment >= 0
        charged += increment
    assert charged == rate * total_ms // 3_600_000


@given(st.integers(min_value=0, max_value=MAX_UDGPU), st.integers(min_value=0, max_value=10_000))
def test_fee_and_provider_share_add_up(amount: int, bps: int) -> None:
    fee = fee_of(amount, bps)
    assert 0 <= fee <= amount
    assert fee + (amount - fee) == amount
    assert fee == (Decimal(amount) * bps / 10_000).to_integral_value(rounding="ROUND_FLOOR")


def test_reference_price_examples() -> None:
    # 0.50 dGPU per GPU-hour for 10 seconds
    assert cost(500_000, 10_000) == 1388
    # a full hour costs exactly the rate
    assert cost(500_000, 3_600_000) == 500_000
    assert fee_of(500_000, 500) == 25_000
