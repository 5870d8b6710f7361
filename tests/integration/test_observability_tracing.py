"""Tracing's switches without a server: on only with the config or the standard OTEL_*
variables (OTEL_SDK_DISABLED wins), the endpoint they name, and sampling decided before
any span is made (a caller's traceparent is followed)."""

from __future__ import annotations

import time

import pytest

from hybridfast.config import TracingConfig
from hybridfast.observability.tracing import CURRENT, Tracing, _endpoint, to_unix_ns, wanted

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_tracing_is_off_unless_the_config_or_otel_variables_say_so() -> None:
    assert not wanted(TracingConfig(), {})
    assert wanted(TracingConfig(enabled=True), {})
    assert wanted(TracingConfig(), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert wanted(TracingConfig(), {"OTEL_TRACES_EXPORTER": "otlp"})
    assert not wanted(
        TracingConfig(), {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "x"}
    )
    assert not wanted(TracingConfig(enabled=True), {"OTEL_SDK_DISABLED": "true"})


def test_the_endpoint_follows_the_otlp_rules() -> None:
    assert _endpoint(TracingConfig(), {}) == "http://127.0.0.1:4318/v1/traces"
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"}
    assert _endpoint(TracingConfig(), env) == "http://collector:4318/v1/traces"
    env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = "http://traces:9999/custom"
    assert _endpoint(TracingConfig(), env) == "http://traces:9999/custom"
    assert _endpoint(TracingConfig(endpoint="http://cfg:4318"), env) == "http://cfg:4318/v1/traces"


def test_an_unsampled_request_makes_no_span_but_a_callers_trace_is_followed() -> None:
    # (JSON: its exporter tries once, so shutting down with nothing listening is quick.)
    settings = TracingConfig(enabled=True, sample_ratio=0.0, protocol="http/json")
    tracing = Tracing(settings, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    try:
        assert tracing.start_request({}, "/v1/chat/completions") == (None, None)
        span, token = tracing.start_request({"traceparent": TRACEPARENT}, "/v1/chat/completions")
        assert span is not None
        assert span.is_recording()
        assert tracing.trace_id(span) == "4bf92f3577b34da6a3ce929d0e0e4736"
        span.end()
        otel_token, current_token = token
        CURRENT.reset(current_token)
        tracing._context.detach(otel_token)
    finally:
        tracing.shutdown()


def test_the_request_span_keeps_the_clock_of_its_children(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Children are placed from the pipeline's perf_counter marks; if the request span took the
    # SDK's wall-clock default, a clock step (NTP) after start-up put them outside it.
    settings = TracingConfig(enabled=True, protocol="http/json")
    tracing = Tracing(settings, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})

    def stepped() -> int:  # the wall clock, stepped 5 s back
        return time.time_ns() - 5_000_000_000

    monkeypatch.setattr("opentelemetry.sdk.trace.time_ns", stepped)  # the SDK's own clock
    try:
        before = to_unix_ns(time.perf_counter())
        span, token = tracing.start_request({}, "/v1/chat/completions")
        assert span is not None
        after = to_unix_ns(time.perf_counter())
        assert before <= span.start_time <= after
        otel_token, current_token = token
        CURRENT.reset(current_token)
        tracing._context.detach(otel_token)
        span.end()
    finally:
        tracing.shutdown()
