"""asv: the native money functions (run with `asv run --python=same` against the working tree)."""

from __future__ import annotations

from hybridfast._core import Price, format_usd, parse_usd


class TimeMoney:
    def setup(self) -> None:
        self.price = Price.per_mtok("3", "15", "0.3", "3.75")

    def time_cost(self) -> None:
        self.price.cost(input_tokens=1200, output_tokens=350, cached_input_tokens=600)

    def time_parse_usd(self) -> None:
        parse_usd("0.000075")

    def time_format_usd(self) -> None:
        format_usd(1_234_567_890_123)
