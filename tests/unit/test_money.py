"""Exact money through the binding: the core's picodollars against Python's Decimal."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

import hybridfast
from hybridfast import _core
from hybridfast._core import PICODOLLARS_PER_USD, Price, format_usd, parse_usd


def test_price_per_mtok_is_exact_for_six_decimals() -> None:
    price = Price.per_mtok("0.075", "0.3", "0.01875")
    assert (price.input, price.output, price.cached_input) == (75_000, 300_000, 18_750)
    assert price.cache_write == price.input  # no separate write price: billed as input
    # 1M tokens at $0.075/Mtok is exactly 7.5 cents.
    assert price.cost(input_tokens=1_000_000) == 75_000_000_000
    assert format_usd(price.cost(input_tokens=1_000_000)) == "0.075"


def test_cost_matches_a_hand_computed_anthropic_bill() -> None:
    # claude-sonnet-4-5: $3 in, $15 out, $0.30 cache read, $3.75 cache write per Mtok.
    price = Price.per_mtok("3", "15", "0.30", "3.75")
    cost = price.cost(
        input_tokens=10_000, output_tokens=500, cached_input_tokens=8_000, cache_write_tokens=1_000
    )
    expected = (
        Decimal(1_000) * 3
        + Decimal(8_000) * Decimal("0.30")
        + Decimal(1_000) * Decimal("3.75")
        + Decimal(500) * 15
    )
    assert Decimal(format_usd(cost)) == expected / 1_000_000
    assert format_usd(cost) == "0.01665"  # 0.003 + 0.0024 + 0.00375 + 0.0075


def test_errors_map_to_the_hierarchy_with_codes() -> None:
    with pytest.raises(_core.InvalidArgumentError) as info:
        Price().cost(input_tokens=1, cached_input_tokens=2)
    assert isinstance(info.value, hybridfast.HybridfastError)
    assert info.value.code == "ERR_INVALID_REQUEST"
    with pytest.raises(_core.OverflowError) as overflow:
        Price(input=2**62).cost(input_tokens=4)
    assert overflow.value.code == "ERR_OVERFLOW"
    with pytest.raises(_core.InvalidArgumentError):
        parse_usd("1e-3")
    with pytest.raises(OverflowError):  # a negative count is refused by the type conversion
        Price().cost(input_tokens=-1)


@given(
    st.decimals(
        min_value=-1_000_000, max_value=1_000_000, places=12, allow_nan=False, allow_infinity=False
    )
)
def test_parse_and_format_agree_with_decimal(amount: Decimal) -> None:
    picos = parse_usd(format(amount, "f"))
    assert Decimal(picos) / PICODOLLARS_PER_USD == amount
    assert Decimal(format_usd(picos)) == amount


@given(
    st.integers(0, 10**7),
    st.integers(0, 10**7),
    st.integers(0, 10**7),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
)
def test_cost_equals_decimal_arithmetic(
    inp: int, cached: int, written: int, out: int, price_micro: int
) -> None:
    total_in = inp + cached + written
    price = Price(
        input=price_micro,
        output=price_micro * 4,
        cached_input=price_micro // 10,
        cache_write=price_micro * 5 // 4,
    )
    expected = (
        inp * price.input
        + cached * price.cached_input
        + written * price.cache_write
        + out * price.output
    )
    assert (
        price.cost(
            input_tokens=total_in,
            output_tokens=out,
            cached_input_tokens=cached,
            cache_write_tokens=written,
        )
        == expected
    )
