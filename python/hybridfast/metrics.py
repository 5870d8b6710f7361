"""The one Prometheus registry that `GET /metrics` exposes, and the one way metrics are
kept in this process.

Every family on the request path is a plain `Counter` or `Histogram` from this module: a
dict of numbers updated on the event loop (no locks, no per-request objects), turned into
Prometheus families only when `/metrics` is scraped (`FamiliesCollector`). State that
already lives somewhere (the router's circuits, the ledger's budgets, the cache's sizes) is
read at scrape time by a collector next to it. Names start with `hybridfast_`.

Cardinality: a family keeps at most `max_series` label sets (`observability.metrics.
max_series`); a new one past that is counted under the label values "other", so a flood of
made-up model names cannot grow the process or the Prometheus server without bound.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

REGISTRY = CollectorRegistry(auto_describe=True)

Labels = tuple[str, ...]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
INTER_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
OTHER = "other"
DEFAULT_MAX_SERIES = 2000


class _Family(ABC):
    __slots__ = ("doc", "labelnames", "max_series", "name", "other")

    def __init__(self, name: str, doc: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.doc = doc
        self.labelnames = list(labelnames)
        self.max_series = DEFAULT_MAX_SERIES
        self.other: Labels = (OTHER,) * len(self.labelnames)
        _ALL.append(self)

    @abstractmethod
    def family(self, with_samples: bool = True) -> Metric:
        """The family as prometheus_client exposes it (samples read at scrape time)."""


_ALL: list[_Family] = []


class Counter(_Family):
    """A labelled counter: `inc(("a", "b"))`."""

    __slots__ = ("values",)

    def __init__(self, name: str, doc: str, labelnames: Sequence[str]) -> None:
        super().__init__(name, doc, labelnames)
        self.values: dict[Labels, float] = {}

    def inc(self, labels: Labels = (), amount: float = 1) -> None:
        values = self.values
        value = values.get(labels)
        if value is None:
            if len(values) >= self.max_series:
                labels = self.other
            value = values.get(labels, 0)
        values[labels] = value + amount

    def labels(self, *values: str) -> _Bound:
        """prometheus_client's `labels(...).inc()` spelling, for code off the hot path."""
        return _Bound(self, values)

    def family(self, with_samples: bool = True) -> Metric:
        fam = CounterMetricFamily(self.name, self.doc, labels=self.labelnames)
        if with_samples:
            for labels, value in list(self.values.items()):
                fam.add_metric(list(labels), value)
        return fam


class Histogram(_Family):
    """A labelled histogram; each series is its bucket counts (the last is +Inf) and sum."""

    __slots__ = ("bounds", "series")

    def __init__(
        self, name: str, doc: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        super().__init__(name, doc, labelnames)
        self.bounds = tuple(float(b) for b in buckets)
        self.series: dict[Labels, list[float]] = {}

    def observe(self, labels: Labels, value: float) -> None:
        series = self.series.get(labels)
        if series is None:
            if len(self.series) >= self.max_series:
                labels = self.other
            series = self.series.get(labels)
            if series is None:
                series = self.series[labels] = [0.0] * (len(self.bounds) + 2)
        # Prometheus buckets are "less than or equal": the first bound >= value.
        series[bisect_left(self.bounds, value)] += 1
        series[-1] += value

    def labels(self, *values: str) -> _Bound:
        return _Bound(self, values)

    def family(self, with_samples: bool = True) -> Metric:
        fam = HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)
        if with_samples:
            for labels, series in list(self.series.items()):
                buckets, total = [], 0.0
                for bound, count in zip((*self.bounds, float("inf")), series[:-1], strict=True):
                    total += count
                    buckets.append(("+Inf" if bound == float("inf") else repr(bound), total))
                fam.add_metric(list(labels), buckets, series[-1])
        return fam


class Gauge(_Family):
    """A labelled value that is set, not added to (sizes, states)."""

    __slots__ = ("values",)

    def __init__(self, name: str, doc: str, labelnames: Sequence[str]) -> None:
        super().__init__(name, doc, labelnames)
        self.values: dict[Labels, float] = {}

    def set(self, labels: Labels, value: float) -> None:
        if labels not in self.values and len(self.values) >= self.max_series:
            labels = self.other
        self.values[labels] = value

    def labels(self, *values: str) -> _Bound:
        return _Bound(self, values)

    def family(self, with_samples: bool = True) -> Metric:
        fam = GaugeMetricFamily(self.name, self.doc, labels=self.labelnames)
        if with_samples:
            for labels, value in list(self.values.items()):
                fam.add_metric(list(labels), value)
        return fam


class _Bound:
    """One label set of a family: `family.labels("a").inc()`."""

    __slots__ = ("labels", "metric")

    def __init__(self, metric: Counter | Histogram | Gauge, labels: Labels) -> None:
        self.metric = metric
        self.labels = labels

    def inc(self, amount: float = 1) -> None:
        assert isinstance(self.metric, Counter)
        self.metric.inc(self.labels, amount)

    def observe(self, value: float) -> None:
        assert isinstance(self.metric, Histogram)
        self.metric.observe(self.labels, value)

    def set(self, value: float) -> None:
        assert isinstance(self.metric, Gauge)
        self.metric.set(self.labels, value)


def set_max_series(limit: int) -> None:
    """The cardinality bound of every family (from `observability.metrics.max_series`)."""
    for metric in _ALL:
        metric.max_series = max(1, limit)


REQUESTS = Counter(
    "hybridfast_requests",
    "API requests answered (errors included), by route, deployment, status, error code "
    "and cache result.",
    ["route", "deployment", "status", "code", "cache"],
)
LATENCY = Histogram(
    "hybridfast_request_duration_seconds",
    "Time from receiving a request to its last byte, by route and deployment.",
    ["route", "deployment", "stream"],
    LATENCY_BUCKETS,
)
TTFT = Histogram(
    "hybridfast_time_to_first_token_seconds",
    "Time from receiving a streaming request to its first content byte, by deployment.",
    ["deployment"],
    LATENCY_BUCKETS,
)
OVERHEAD = Histogram(
    "hybridfast_gateway_overhead_seconds",
    "The gateway's own time per request: total time minus time waiting on upstreams.",
    ["stream"],
    FAST_BUCKETS,
)
# Tokens served, by how the answer was made: `cache="miss"|"bypass"` are the tokens an
# upstream billed, and agree with the ledger's `hybridfast_tokens` (tokens billed, by key
# and team); cache hits served tokens nobody paid for again.
TOKENS = Counter(
    "hybridfast_request_tokens",
    "Tokens of answered requests as the upstreams reported them, by deployment, "
    "direction (input, output, cached_input) and cache result.",
    ["deployment", "direction", "cache"],
)
ERRORS = Counter(
    "hybridfast_errors",
    "Failed upstream attempts and failed requests, by deployment, status and code.",
    ["deployment", "status", "code"],
)
FAILURES = Counter(
    "hybridfast_request_failures",
    "Requests answered with an error (4xx, 5xx, 499 when the client left), by route, "
    "deployment, status and code.",
    ["route", "deployment", "status", "code"],
)
UPSTREAM_LATENCY = Histogram(
    "hybridfast_upstream_duration_seconds",
    "Time a request spent waiting on upstreams, by the deployment that answered.",
    ["deployment"],
    LATENCY_BUCKETS,
)
INTER_TOKEN = Histogram(
    "hybridfast_inter_token_latency_seconds",
    "Mean time between output tokens after the first, per streamed request.",
    ["deployment"],
    INTER_TOKEN_BUCKETS,
)
QUEUE = Histogram(
    "hybridfast_queue_seconds",
    "Time from receiving a request to its first upstream call (parsing, hooks, cache "
    "lookup, routing, admission, budget hold): what a request waits before an upstream "
    "works on it.",
    ["route"],
    FAST_BUCKETS,
)
FALLBACKS = Counter(
    "hybridfast_fallbacks",
    "Requests moved on to another deployment after one failed, by route.",
    ["route"],
)
RECOVERIES = Counter(
    "hybridfast_stream_recoveries",
    "Streams that broke mid-way and were continued on another deployment, by route.",
    ["route"],
)


RATELIMIT_REMAINING = Gauge(
    "hybridfast_ratelimit_remaining",
    "What the caller's tightest rate limit had left after its last request, by key name "
    "and kind (requests, tokens).",
    ["key", "kind"],
)


class FamiliesCollector:
    def collect(self) -> Iterator[Metric]:
        for metric in _ALL:
            yield metric.family()

    def describe(self) -> Iterator[Metric]:
        for metric in _ALL:
            yield metric.family(with_samples=False)


REGISTRY.register(FamiliesCollector())
