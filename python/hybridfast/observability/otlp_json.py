"""OTLP/HTTP with the JSON encoding (`OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/json`, the
standard variable the SDK's own exporter does not implement): the same spans as the
protobuf exporter, as plain dicts written by orjson on the SDK's export thread.

Encoding is not what tracing costs a request (making and filling the spans is: measured in
benches/test_observability.py, both encodings cost the same CPU per request within noise);
this is for receivers and proxies that take JSON.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

import orjson

log = logging.getLogger("hybridfast.tracing")


def _value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}  # int64 is a string in OTLP/JSON
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list | tuple):
        return {"arrayValue": {"values": [_value(v) for v in value]}}
    return {"stringValue": str(value)}


def _attributes(attributes: Any) -> list[dict[str, Any]]:
    return [{"key": k, "value": _value(v)} for k, v in (attributes or {}).items()]


def _span(span: Any) -> dict[str, Any]:
    context = span.get_span_context()
    assert context is not None
    out: dict[str, Any] = {
        "traceId": format(context.trace_id, "032x"),
        "spanId": format(context.span_id, "016x"),
        "name": span.name,
        "kind": span.kind.value + 1,  # the API counts from INTERNAL = 0, OTLP from 1
        "startTimeUnixNano": str(span.start_time),
        "endTimeUnixNano": str(span.end_time),
        "attributes": _attributes(span.attributes),
        "status": {"code": span.status.status_code.value},
    }
    if span.parent is not None:
        out["parentSpanId"] = format(span.parent.span_id, "016x")
    return out


def encode(spans: Sequence[Any]) -> bytes:
    """An ExportTraceServiceRequest in OTLP/JSON: spans grouped by resource and scope."""
    groups: dict[tuple[int, str], tuple[Any, list[dict[str, Any]]]] = {}
    for span in spans:
        scope = span.instrumentation_scope.name if span.instrumentation_scope else ""
        key = (id(span.resource), scope)
        if key not in groups:
            groups[key] = (span.resource, [])
        groups[key][1].append(_span(span))
    resource_spans = [
        {
            "resource": {"attributes": _attributes(resource.attributes if resource else {})},
            "scopeSpans": [{"scope": {"name": scope}, "spans": encoded}],
        }
        for (_, scope), (resource, encoded) in groups.items()
    ]
    return orjson.dumps({"resourceSpans": resource_spans})


class JsonSpanExporter:
    """A span exporter for the SDK's BatchSpanProcessor (the SDK's `SpanExporter`
    interface; the SDK is imported only when tracing is on)."""

    def __init__(self, endpoint: str, timeout_s: float = 10.0) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult  # the `otel` extra

        request = urllib.request.Request(
            self.endpoint,
            data=encode(spans),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read()
        except (urllib.error.URLError, OSError) as exc:
            log.warning("could not export %d spans to %s: %s", len(spans), self.endpoint, exc)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        pass
