"""The cache's Prometheus metrics: plain counters of `hybridfast.metrics` (no locks on the
lookup path), exported with the rest at scrape time.

`hybridfast_cache_hits_total{kind}` (exact, semantic) and `hybridfast_cache_misses_total`
are the lookup counter seen the way dashboards ask for it; they are derived from
`LOOKUPS` when scraped, so a lookup pays for one counter, not three.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from hybridfast.metrics import FAST_BUCKETS, REGISTRY, Counter, Gauge, Histogram

LOOKUPS = Counter(
    "hybridfast_cache_lookups",
    "Cache lookups by result (hit, semantic-hit, miss, bypass).",
    ["result"],
)
LOOKUP_SECONDS = Histogram(
    "hybridfast_cache_lookup_seconds",
    "Time spent in a cache lookup, embedding included.",
    ["result"],
    (5e-6, 1e-5, 2.5e-5, 5e-5, *FAST_BUCKETS[:-1], 5e-2),
)
STORES = Counter("hybridfast_cache_stores", "Answers written to the cache.", ["kind"])
EVICTIONS = Counter(
    "hybridfast_cache_evictions",
    "Entries pushed out by the max_entries bound (LRU).",
    ["kind"],
)
GUARD_VETOES = Counter(
    "hybridfast_cache_guard_vetoes",
    "Semantic candidates above the threshold that a guard refused.",
    ["guard"],
)
ENTRIES = Gauge("hybridfast_cache_entries", "Entries held by this process.", ["kind"])
INVALIDATIONS = Counter(
    "hybridfast_cache_invalidations",
    "Entries removed through the admin API or the CLI.",
    [],
)

_HIT_KINDS = {"hit": "exact", "semantic-hit": "semantic"}


class _HitsCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        hits = CounterMetricFamily(
            "hybridfast_cache_hits",
            "Requests answered from the cache, by kind (exact, semantic).",
            labels=["kind"],
        )
        misses = CounterMetricFamily(
            "hybridfast_cache_misses", "Cache lookups that found nothing usable."
        )
        counts = dict.fromkeys(_HIT_KINDS.values(), 0.0)
        missed = 0.0
        for (result,), value in list(LOOKUPS.values.items()):
            if result in _HIT_KINDS:
                counts[_HIT_KINDS[result]] += value
            elif result == "miss":
                missed += value
        for kind, value in counts.items():
            hits.add_metric([kind], value)
        misses.add_metric([], missed)
        yield hits
        yield misses


REGISTRY.register(_HitsCollector())
