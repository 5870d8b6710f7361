"""The one Prometheus registry that `GET /metrics` exposes. Every part defines its metrics
in its own module with `registry=REGISTRY`; names start with `hybridfast_`.

The gateway's own metrics are below: requests, latency, time to first token, the gateway's
overhead (total time minus time waiting on upstreams), tokens and errors, by deployment and
status. They sit on the path of every request, so they are plain dicts of numbers updated
on the event loop (no locks, no per-request objects) and turned into Prometheus families
only when `/metrics` is scraped, by `GatewayCollector`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

REGISTRY = CollectorRegistry(auto_describe=True)

Labels = tuple[str, ...]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


class Counter:
    """A labelled counter: `inc(("a", "b"))`."""

    __slots__ = ("doc", "labelnames", "name", "values")

    def __init__(self, name: str, doc: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.doc = doc
        self.labelnames = list(labelnames)
        self.values: dict[Labels, float] = {}

    def inc(self, labels: Labels, amount: float = 1) -> None:
        values = self.values
        values[labels] = values.get(labels, 0) + amount

    def family(self, with_samples: bool = True) -> Metric:
        fam = CounterMetricFamily(self.name, self.doc, labels=self.labelnames)
        if with_samples:
            for labels, value in self.values.items():
                fam.add_metric(list(labels), value)
        return fam


class Histogram:
    """A labelled histogram; each series is its bucket counts (the last is +Inf) and sum."""

    __slots__ = ("bounds", "doc", "labelnames", "name", "series")

    def __init__(
        self, name: str, doc: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        self.name = name
        self.doc = doc
        self.labelnames = list(labelnames)
        self.bounds = tuple(float(b) for b in buckets)
        self.series: dict[Labels, list[float]] = {}

    def observe(self, labels: Labels, value: float) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = [0.0] * (len(self.bounds) + 2)
        # Prometheus buckets are "less than or equal": the first bound >= value.
        series[bisect_left(self.bounds, value)] += 1
        series[-1] += value

    def family(self, with_samples: bool = True) -> Metric:
        fam = HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)
        if with_samples:
            for labels, series in self.series.items():
                buckets, total = [], 0.0
                for bound, count in zip((*self.bounds, float("inf")), series[:-1], strict=True):
                    total += count
                    buckets.append(("+Inf" if bound == float("inf") else repr(bound), total))
                fam.add_metric(list(labels), buckets, series[-1])
        return fam


REQUESTS = Counter(
    "hybridfast_requests",
    "Chat requests answered, by route, deployment, status and cache result.",
    ["route", "deployment", "status", "cache"],
)
LATENCY = Histogram(
    "hybridfast_request_duration_seconds",
    "Time from receiving a request to its last byte, by deployment.",
    ["deployment", "stream"],
    _LATENCY_BUCKETS,
)
TTFT = Histogram(
    "hybridfast_time_to_first_token_seconds",
    "Time from receiving a streaming request to its first content byte, by deployment.",
    ["deployment"],
    _LATENCY_BUCKETS,
)
OVERHEAD = Histogram(
    "hybridfast_gateway_overhead_seconds",
    "The gateway's own time per request: total time minus time waiting on upstreams.",
    ["stream"],
    _OVERHEAD_BUCKETS,
)
# (`hybridfast_tokens`, by key and team, is the ledger's: tokens billed.)
TOKENS = Counter(
    "hybridfast_request_tokens",
    "Tokens of answered requests as the upstreams reported them, by deployment and "
    "direction (input, output, cached_input).",
    ["deployment", "direction"],
)
ERRORS = Counter(
    "hybridfast_errors",
    "Failed upstream attempts and failed requests, by deployment, status and code.",
    ["deployment", "status", "code"],
)

_ALL: tuple[Counter | Histogram, ...] = (REQUESTS, LATENCY, TTFT, OVERHEAD, TOKENS, ERRORS)


class GatewayCollector:
    def collect(self) -> Iterator[Metric]:
        for metric in _ALL:
            yield metric.family()

    def describe(self) -> Iterator[Metric]:
        for metric in _ALL:
            yield metric.family(with_samples=False)


REGISTRY.register(GatewayCollector())
