"""The shipped price table. (The ledger issue fills in the data file and LiteLLM import.)"""

from __future__ import annotations

from hybridfast._core import Price


def lookup_price(kind: str, model: str) -> Price | None:
    """The price of `model` on a provider of this kind, if the table knows it."""
    return None
