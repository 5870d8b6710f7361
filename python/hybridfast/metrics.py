"""The one Prometheus registry that `GET /metrics` exposes. Every part defines its metrics
in its own module with `registry=REGISTRY`; names start with `hybridfast_`."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

REGISTRY = CollectorRegistry(auto_describe=True)
