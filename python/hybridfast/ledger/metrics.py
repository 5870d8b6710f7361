"""The ledger's Prometheus metrics (on `hybridfast.metrics.REGISTRY`).

Spend and tokens are counters by deployment, key and team (the key's *name*, never the
key). Budget gauges are read from the core at scrape time, so settling costs nothing for
them. Dollar values are floats here: metrics are for display; the ledger is exact.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from hybridfast._core import PICODOLLARS_PER_USD
from hybridfast.metrics import REGISTRY

if TYPE_CHECKING:
    from hybridfast.ledger.service import NativeLedger

SPEND = Counter(
    "hybridfast_spend_usd",
    "Money spent on upstream calls, in US dollars.",
    ["deployment", "key", "team"],
    registry=REGISTRY,
)
TOKENS = Counter(
    "hybridfast_tokens",
    "Tokens billed, by kind (input, output, cached_input, cache_write, reasoning).",
    ["deployment", "key", "team", "kind"],
    registry=REGISTRY,
)
SOFT_LIMIT = Counter(
    "hybridfast_budget_soft_limit_warnings",
    "Times a budget crossed its soft limit (once per window).",
    ["budget"],
    registry=REGISTRY,
)
REFUSED = Counter(
    "hybridfast_budget_refusals",
    "Requests refused because a budget could not cover them.",
    ["budget"],
    registry=REGISTRY,
)
WRITE_ERRORS = Counter(
    "hybridfast_ledger_write_errors",
    "Failed writes to the ledger store (entries are kept and retried).",
    registry=REGISTRY,
)

_KINDS = ("input", "output", "cached_input", "cache_write", "reasoning")


class LabelCache:
    """Labelled children per (deployment, key, team), so a settle does not rebuild label
    tuples and look them up in prometheus_client's locked dicts each time."""

    def __init__(self) -> None:
        self._children: dict[tuple[str, str, str], tuple[Any, ...]] = {}

    def get(self, deployment: str, key: str, team: str) -> tuple[Any, ...]:
        ident = (deployment, key, team)
        children = self._children.get(ident)
        if children is None:
            children = (
                SPEND.labels(deployment, key, team),
                *(TOKENS.labels(deployment, key, team, kind) for kind in _KINDS),
            )
            self._children[ident] = children
        return children


class _BudgetCollector(Collector):
    def __init__(self) -> None:
        self.ledgers: weakref.WeakSet[NativeLedger] = weakref.WeakSet()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        remaining = GaugeMetricFamily(
            "hybridfast_budget_remaining_usd",
            "What is left of each budget in its current window, in US dollars.",
            labels=["budget"],
        )
        spent = GaugeMetricFamily(
            "hybridfast_budget_spent_usd",
            "What each budget has spent in its current window, in US dollars.",
            labels=["budget"],
        )
        pending = GaugeMetricFamily(
            "hybridfast_ledger_pending_entries",
            "Settled entries not yet committed to the store.",
        )
        queued = 0
        for ledger in list(self.ledgers):
            for state in ledger.budget_states():
                label = state.budget.label
                remaining.add_metric([label], state.remaining / PICODOLLARS_PER_USD)
                spent.add_metric([label], state.spent / PICODOLLARS_PER_USD)
            queued += ledger.books.pending_len()
        pending.add_metric([], queued)
        yield remaining
        yield spent
        yield pending

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())


BUDGETS = _BudgetCollector()
REGISTRY.register(BUDGETS)
