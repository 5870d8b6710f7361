"""The cache's Prometheus metrics (on `hybridfast.metrics.REGISTRY`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from hybridfast.metrics import REGISTRY

LOOKUPS = Counter(
    "hybridfast_cache_lookups",
    "Cache lookups by result (hit, semantic-hit, miss, bypass).",
    ["result"],
    registry=REGISTRY,
)
LOOKUP_SECONDS = Histogram(
    "hybridfast_cache_lookup_seconds",
    "Time spent in a cache lookup, embedding included.",
    ["result"],
    buckets=(5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 5e-2),
    registry=REGISTRY,
)
STORES = Counter(
    "hybridfast_cache_stores", "Answers written to the cache.", ["kind"], registry=REGISTRY
)
EVICTIONS = Counter(
    "hybridfast_cache_evictions",
    "Entries pushed out by the max_entries bound (LRU).",
    ["kind"],
    registry=REGISTRY,
)
GUARD_VETOES = Counter(
    "hybridfast_cache_guard_vetoes",
    "Semantic candidates above the threshold that a guard refused.",
    ["guard"],
    registry=REGISTRY,
)
ENTRIES = Gauge(
    "hybridfast_cache_entries", "Entries held by this process.", ["kind"], registry=REGISTRY
)
INVALIDATIONS = Counter(
    "hybridfast_cache_invalidations",
    "Entries removed through the admin API or the CLI.",
    registry=REGISTRY,
)
