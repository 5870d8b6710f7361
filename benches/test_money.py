"""Exact cost of a request's usage: the native core against the same arithmetic in Python."""

from __future__ import annotations

from typing import Any

from hybridfast._core import Price

PRICE = Price.per_mtok("3", "15", "0.3", "3.75")
USAGE = {
    "input_tokens": 1200,
    "output_tokens": 350,
    "cached_input_tokens": 600,
    "cache_write_tokens": 100,
}


def cost_python(price: tuple[int, int, int, int], usage: dict[str, int]) -> int:
    """The reference: the same integer arithmetic and checks as the core."""
    input_price, output_price, cached_price, write_price = price
    cached, written = usage["cached_input_tokens"], usage["cache_write_tokens"]
    if cached + written > usage["input_tokens"]:
        raise ValueError("cached and cache-write tokens exceed input tokens")
    plain = usage["input_tokens"] - cached - written
    return (
        plain * input_price
        + cached * cached_price
        + written * write_price
        + usage["output_tokens"] * output_price
    )


# Both sides run the same way: a function of no arguments, 500 calls a round. Left to
# pytest-benchmark's calibration, one side could get one call a round and the other four,
# and with one call a round the timer's own cost (comparable to a call here) lands in its
# median: the gate then compared the timer, not the arithmetic (0.30 measured in CI).
ROUND = {"iterations": 500, "rounds": 300, "warmup_rounds": 10}


def test_cost_native(benchmark: Any) -> None:
    def native() -> int:
        return PRICE.cost(**USAGE)

    price = (PRICE.input, PRICE.output, PRICE.cached_input, PRICE.cache_write)
    assert benchmark.pedantic(native, **ROUND) == cost_python(price, USAGE)


def test_cost_python(benchmark: Any) -> None:
    price = (PRICE.input, PRICE.output, PRICE.cached_input, PRICE.cache_write)

    def python() -> int:
        return cost_python(price, USAGE)

    assert benchmark.pedantic(python, **ROUND) == PRICE.cost(**USAGE)
