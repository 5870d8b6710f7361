"""The one Prometheus registry that `GET /metrics` exposes. Every part defines its metrics
in its own module with `registry=REGISTRY`; names start with `hybridfast_`.

The gateway's own metrics are below: requests, latency, time to first token, the gateway's
overhead (total time minus time waiting on the upstream), tokens and errors, by deployment
and status. Label children are cached so a request pays a dict lookup, not `.labels()`.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)

REQUESTS = Counter(
    "hybridfast_requests",
    "Chat requests answered, by route, deployment, status and cache result.",
    ["route", "deployment", "status", "cache"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "hybridfast_request_duration_seconds",
    "Time from receiving a request to its last byte, by deployment.",
    ["deployment", "stream"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
TTFT = Histogram(
    "hybridfast_time_to_first_token_seconds",
    "Time from receiving a streaming request to its first content byte, by deployment.",
    ["deployment"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
OVERHEAD = Histogram(
    "hybridfast_gateway_overhead_seconds",
    "The gateway's own time per request: total time minus time waiting on upstreams.",
    ["stream"],
    buckets=_OVERHEAD_BUCKETS,
    registry=REGISTRY,
)
# (`hybridfast_tokens`, by key and team, is the ledger's: tokens billed.)
TOKENS = Counter(
    "hybridfast_request_tokens",
    "Tokens of answered requests as the upstreams reported them, by deployment and "
    "direction (input, output, cached_input).",
    ["deployment", "direction"],
    registry=REGISTRY,
)
ERRORS = Counter(
    "hybridfast_errors",
    "Failed upstream attempts and failed requests, by deployment, status and code.",
    ["deployment", "status", "code"],
    registry=REGISTRY,
)

_children: dict[tuple[Any, ...], Any] = {}


def child(metric: Any, *labels: str) -> Any:
    key = (id(metric), *labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found
