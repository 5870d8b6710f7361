"""The ledger's Prometheus metrics (on `hybridfast.metrics.REGISTRY`).

Spend and tokens are counters by deployment, key and team (the key's *name*, never the
key), kept as plain integers and exported at scrape time; budget gauges are read from the
core at scrape time too, so settling pays almost nothing for metrics. Dollar values are
floats here: metrics are for display; the ledger is exact.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hybridfast import _core
from hybridfast._core import PICODOLLARS_PER_USD
from hybridfast.ledger.budgets import BudgetState
from hybridfast.metrics import REGISTRY, Counter
from hybridfast.types import LedgerRecord


class BudgetSource(Protocol):
    """What the scrape reads from a live ledger (`NativeLedger`): its budgets now and
    its books' queue. A protocol, so this module needs nothing above it."""

    books: _core.Ledger

    def budget_states(self, now_ms: int | None = None) -> list[BudgetState]: ...


SOFT_LIMIT = Counter(
    "hybridfast_budget_soft_limit_warnings",
    "Times a budget crossed its soft limit (once per window).",
    ["budget"],
)
REFUSED = Counter(
    "hybridfast_budget_refusals",
    "Requests refused because a budget could not cover them.",
    ["budget"],
)
WRITE_ERRORS = Counter(
    "hybridfast_ledger_write_errors",
    "Failed writes to the ledger store (entries are kept and retried).",
    [],
)

_KINDS = ("input", "output", "cached_input", "cache_write", "reasoning")

# Spend and tokens per (deployment, key name, team): plain integers bumped on the event loop
# (a prometheus_client Counter takes a lock per `inc`, ~2 µs each, four per request) and
# turned into counters at scrape time. Process-wide, so they only ever grow.
_TOTALS: dict[tuple[str, str, str], list[int]] = {}


def totals_for(deployment: str, key: str, team: str) -> list[int]:
    """The running `[picodollars, input, output, cached_input, cache_write, reasoning]` of
    one label set, to add to in place."""
    ident = (deployment, key, team)
    cell = _TOTALS.get(ident)
    if cell is None:
        cell = _TOTALS[ident] = [0, 0, 0, 0, 0, 0]
    return cell


_BY_KEY = {"on": True}


def count_by_key(on: bool) -> None:
    """Spend and tokens by key name and team (on), or by deployment only (off: a bound on
    the series when there are thousands of keys; `observability.metrics.by_key`)."""
    _BY_KEY["on"] = on


def count_settled(record: LedgerRecord) -> None:
    """Adds a settled entry to the spend and billed-token counters. A cache hit carries
    the usage of the answer it replays, but nobody was billed for it again: its tokens
    are not billed tokens (the gateway's `hybridfast_request_tokens{cache="hit"}` counts
    them as served)."""
    caller = record.caller
    if _BY_KEY["on"]:
        cell = totals_for(record.deployment or "", caller.key_name or "", caller.team or "")
    else:
        cell = totals_for(record.deployment or "", "", "")
    cell[0] += record.cost
    if record.cache == "hit" or record.cache == "semantic-hit":
        return
    usage = record.usage
    cell[1] += usage.input_tokens
    cell[2] += usage.output_tokens
    cell[3] += usage.cached_input_tokens
    cell[4] += usage.cache_write_tokens
    cell[5] += usage.reasoning_tokens


class _BudgetCollector(Collector):
    def __init__(self) -> None:
        self.ledgers: weakref.WeakSet[BudgetSource] = weakref.WeakSet()

    def collect(self) -> Iterator[Metric]:
        spend = CounterMetricFamily(
            "hybridfast_spend_usd",
            "Money spent on upstream calls, in US dollars.",
            labels=["deployment", "key", "team"],
        )
        tokens = CounterMetricFamily(
            "hybridfast_tokens",
            "Tokens billed, by kind (input, output, cached_input, cache_write, reasoning).",
            labels=["deployment", "key", "team", "kind"],
        )
        for ident, cell in list(_TOTALS.items()):
            spend.add_metric(list(ident), cell[0] / PICODOLLARS_PER_USD)
            for kind, count in zip(_KINDS, cell[1:], strict=True):
                tokens.add_metric([*ident, kind], count)
        yield spend
        yield tokens
        # A budget is (scope, name, window), each its own label: `name` is "" for the
        # global budget and for a budget of every key/team/model of its scope.
        budget_labels = ["scope", "name", "window"]
        limit = GaugeMetricFamily(
            "hybridfast_budget_limit_usd",
            "Each budget's limit per window, in US dollars.",
            labels=budget_labels,
        )
        remaining = GaugeMetricFamily(
            "hybridfast_budget_remaining_usd",
            "What is left of each budget in its current window, in US dollars.",
            labels=budget_labels,
        )
        spent = GaugeMetricFamily(
            "hybridfast_budget_spent_usd",
            "What each budget has spent in its current window, in US dollars.",
            labels=budget_labels,
        )
        pending = GaugeMetricFamily(
            "hybridfast_ledger_pending_entries",
            "Settled entries not yet committed to the store.",
        )
        queued = 0
        for ledger in list(self.ledgers):
            for state in ledger.budget_states():
                budget = state.budget
                labels = [budget.scope, budget.name or "", budget.window]
                limit.add_metric(labels, budget.limit / PICODOLLARS_PER_USD)
                remaining.add_metric(labels, state.remaining / PICODOLLARS_PER_USD)
                spent.add_metric(labels, state.spent / PICODOLLARS_PER_USD)
            queued += ledger.books.pending_len()
        pending.add_metric([], queued)
        yield limit
        yield remaining
        yield spent
        yield pending

    def describe(self) -> Iterator[Metric]:
        return iter(())


BUDGETS = _BudgetCollector()
REGISTRY.register(BUDGETS)
