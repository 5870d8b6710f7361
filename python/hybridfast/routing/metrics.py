"""The router's Prometheus metrics, read from the native live state when `/metrics` is
scraped, so a routing decision or state update pays nothing for them.

    hybridfast_router_circuit_state{deployment}        0 closed, 1 half-open, 2 open
    hybridfast_router_circuit_opened_total{deployment} times the circuit opened
    hybridfast_router_in_flight{deployment}            calls in flight
    hybridfast_router_error_rate{deployment}           failures / calls in the error window
    hybridfast_router_latency_ewma_seconds{deployment} whole-call latency (successful calls)
    hybridfast_router_ttft_ewma_seconds{deployment}    time to first token (streams)
    hybridfast_router_tokens_per_second_ewma{deployment}
    hybridfast_deployment_health{deployment,state}     1 for the state the deployment is in
                                                       (healthy, probing, unhealthy), 0 else
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from hybridfast.metrics import REGISTRY


class LiveRouter(Protocol):
    """What the scrape reads from a router (`NativeRouter`): every deployment's live
    state. A protocol, so this module needs nothing from the package above it."""

    def all_stats(self) -> dict[str, dict[str, Any]]: ...


_CIRCUIT = {"closed": 0.0, "half-open": 1.0, "open": 2.0}
# Deployment health as a state label: one series per state, so a dashboard can show the
# state by name and alert on `hybridfast_deployment_health{state="unhealthy"} == 1`.
_HEALTH = {"closed": "healthy", "half-open": "probing", "open": "unhealthy"}
_ROUTERS: weakref.WeakSet[LiveRouter] = weakref.WeakSet()


class RouterCollector(Collector):
    def collect(self) -> Iterator[Any]:
        label = ["deployment"]
        circuit = GaugeMetricFamily(
            "hybridfast_router_circuit_state",
            "Circuit breaker per deployment: 0 closed, 1 half-open, 2 open.",
            labels=label,
        )
        opened = CounterMetricFamily(
            "hybridfast_router_circuit_opened",
            "Times the deployment's circuit breaker opened.",
            labels=label,
        )
        in_flight = GaugeMetricFamily(
            "hybridfast_router_in_flight", "Calls in flight per deployment.", labels=label
        )
        error_rate = GaugeMetricFamily(
            "hybridfast_router_error_rate",
            "Failed share of the calls in the router's error window.",
            labels=label,
        )
        latency = GaugeMetricFamily(
            "hybridfast_router_latency_ewma_seconds",
            "EWMA of successful calls' duration.",
            labels=label,
        )
        ttft = GaugeMetricFamily(
            "hybridfast_router_ttft_ewma_seconds",
            "EWMA of time to first token of streamed calls.",
            labels=label,
        )
        tps = GaugeMetricFamily(
            "hybridfast_router_tokens_per_second_ewma",
            "EWMA of output tokens per second after the first token.",
            labels=label,
        )
        health = GaugeMetricFamily(
            "hybridfast_deployment_health",
            "1 for the state each deployment is in (healthy, probing, unhealthy), 0 for the "
            "others; from its circuit breaker.",
            labels=["deployment", "state"],
        )
        seen: set[str] = set()
        for router in list(_ROUTERS):
            for dep_id, s in router.all_stats().items():
                if dep_id in seen:  # two routers in one process (tests): report the first
                    continue
                seen.add(dep_id)
                labels = [dep_id]
                circuit.add_metric(labels, _CIRCUIT[s["circuit"]])
                for circuit_state, state in _HEALTH.items():
                    health.add_metric([dep_id, state], float(s["circuit"] == circuit_state))
                opened.add_metric(labels, float(s["times_opened"]))
                in_flight.add_metric(labels, float(s["in_flight"]))
                error_rate.add_metric(labels, s["error_rate"])
                for family, key in (
                    (latency, "latency_s"),
                    (ttft, "ttft_s"),
                    (tps, "tokens_per_s"),
                ):
                    if s[key] is not None:
                        family.add_metric(labels, s[key])
        yield from (circuit, opened, in_flight, error_rate, latency, ttft, tps, health)


def track(router: LiveRouter) -> None:
    _ROUTERS.add(router)


def untrack(router: LiveRouter) -> None:
    _ROUTERS.discard(router)


REGISTRY.register(RouterCollector())
