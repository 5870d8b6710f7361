"""OpenTelemetry traces: one span per request, children for the cache lookup, the route
decision, each upstream attempt and the ledger settle, exported over OTLP/HTTP.

Off by default; on with `observability.tracing.enabled: true` or the standard variables
(`OTEL_TRACES_EXPORTER=otlp`, `OTEL_EXPORTER_OTLP_ENDPOINT`,
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; `OTEL_SDK_DISABLED=true` wins). Needs the `otel`
extra (`pip install 'hybridfast[otel]'`).

Attributes follow the OpenTelemetry GenAI semantic conventions (`gen_ai.operation.name`,
`gen_ai.provider.name`, `gen_ai.request.model`, `gen_ai.response.model`,
`gen_ai.usage.*`, `gen_ai.response.finish_reasons`) plus `hybridfast.*` (deployment, cost,
cache, route, fallback, recovery). An incoming `traceparent` is continued; each upstream
attempt sends its own. Prompts and answers are recorded only with `record_content: true`.

The SDK's span processor batches and exports on its own thread: a request pays for creating
its spans, not for sending them.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

import orjson

from hybridfast._core import format_usd
from hybridfast.config import TracingConfig
from hybridfast.observability import otlp_json
from hybridfast.observability.record import RequestRecord
from hybridfast.providers.http import CALL_HEADERS

log = logging.getLogger("hybridfast.tracing")

# The tracer of the request being served (set by the server's middleware for the request's
# task), so the pipeline hooks below find it without a reference to the server.
CURRENT: ContextVar[Tracing | None] = ContextVar("hybridfast_tracing", default=None)

DEFAULT_ENDPOINT = "http://127.0.0.1:4318"
ATTEMPT_SPANS = "observability.attempt_spans"
ROUTE_START = "observability.route_start"  # perf_counter after the before_route hooks
LAST_ATTEMPT_END = "observability.last_attempt_end"
FINISH_REASONS = "observability.finish_reasons"
CONTENT = "observability.content"
# Pipeline marks (perf_counter seconds, in `ctx.state["marks"]` or `ctx.marks`) that become
# child spans: (span name, start mark, end mark).
# The route decision starts where the cache lookup ended.
MARKED_SPANS = (
    ("cache lookup", "cache_start", "cache_end"),
    ("route", "cache_end", "route_end"),
    ("ledger settle", "settle_start", "settle_end"),
)
# perf_counter seconds → Unix nanoseconds (span times are wall-clock). Every span time goes
# through here, the request span's too: mixed with the SDK's own `time_ns()` defaults, a step
# of the system clock (NTP) between start-up and a request put children outside their parent.
_PERF_OFFSET_NS = time.time_ns() - int(time.perf_counter() * 1e9)


def to_unix_ns(perf_s: float) -> int:
    return int(perf_s * 1e9) + _PERF_OFFSET_NS


def _now_ns() -> int:
    return to_unix_ns(time.perf_counter())


def wanted(settings: TracingConfig, env: Mapping[str, str] | None = None) -> bool:
    """Whether tracing is on: the config, or the standard OTEL_* variables."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    if settings.enabled:
        return True
    exporters = env.get("OTEL_TRACES_EXPORTER", "")
    if exporters:
        return "otlp" in exporters.split(",")
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def _endpoint(settings: TracingConfig, env: Mapping[str, str]) -> str:
    if settings.endpoint:
        base = settings.endpoint
    elif env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]  # the full URL, as the spec says
    else:
        base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or DEFAULT_ENDPOINT
    base = base.rstrip("/")
    return base if base.endswith("/v1/traces") else base + "/v1/traces"


def _protocol(settings: TracingConfig, env: Mapping[str, str]) -> str:
    return (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or settings.protocol
    )


class Tracing:
    """The tracer of one server and the pipeline hooks that make its child spans."""

    def __init__(self, settings: TracingConfig, env: Mapping[str, str] | None = None) -> None:
        # The `otel` extra: imported only when tracing is on.
        from opentelemetry import context, trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        env = os.environ if env is None else env
        self.settings = settings
        self.endpoint = _endpoint(settings, env)
        service = env.get("OTEL_SERVICE_NAME") or settings.service_name
        # A provider of our own, not the global one: an embedding application keeps its own.
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": service}),
            # Roots are sampled in start_request already; a caller's decision is kept.
            sampler=ParentBased(ALWAYS_ON),
        )
        exporter: Any
        if _protocol(settings, env) == "http/json":
            exporter = otlp_json.JsonSpanExporter(self.endpoint)
        else:
            exporter = OTLPSpanExporter(endpoint=self.endpoint)
        self.provider.add_span_processor(
            BatchSpanProcessor(
                exporter,
                schedule_delay_millis=500,
                # Room for a burst of a few thousand requests between exports.
                max_queue_size=16_384,
                max_export_batch_size=2048,
            )
        )
        self.tracer = self.provider.get_tracer("hybridfast")
        self._ratio = settings.sample_ratio
        self._trace = trace
        self._context = context
        self._propagator = TraceContextTextMapPropagator()
        self._server = trace.SpanKind.SERVER
        self._client = trace.SpanKind.CLIENT
        self._internal = trace.SpanKind.INTERNAL
        self._error = trace.Status(trace.StatusCode.ERROR)

    # --- the request span (the server middleware) ----------------------------------------

    def start_request(self, headers: Mapping[str, str], name: str) -> tuple[Any, Any]:
        """Starts the request's span as a child of the caller's `traceparent` (if any) and
        makes it current; returns (span, token for `end_request`), or (None, None) for a
        request this gateway does not sample."""
        if "traceparent" not in headers and self._ratio < 1.0 and random.random() >= self._ratio:
            # Decided before any OpenTelemetry work: an unsampled request costs one draw
            # (a caller's traceparent is followed, sampled or not, by the SDK's sampler).
            return None, None
        parent = self._propagator.extract(headers)
        span = self.tracer.start_span(name, context=parent, kind=self._server, start_time=_now_ns())
        token = self._context.attach(self._trace.set_span_in_context(span, parent))
        return span, (token, CURRENT.set(self))

    def trace_id(self, span: Any) -> str | None:
        span_context = span.get_span_context()
        return format(span_context.trace_id, "032x") if span_context.is_valid else None

    def end_request(self, span: Any, token: Any, record: RequestRecord, ctx: Any) -> None:
        try:
            if not span.is_recording():  # not sampled: nothing to fill in
                return
            state = getattr(ctx, "state", None) or {}
            self._marked_children(span, ctx, state)
            span.update_name(f"{_operation(record.endpoint)} {record.route or record.endpoint}")
            span.set_attributes(_request_attributes(record))
            reasons = state.get(FINISH_REASONS)
            if reasons:
                span.set_attribute("gen_ai.response.finish_reasons", reasons)
            content = state.get(CONTENT)
            if content:
                span.set_attributes(content)
            if record.status >= 400:
                span.set_status(self._error)
                span.set_attribute("error.type", record.code or str(record.status))
        finally:
            span.end(end_time=_now_ns())
            otel_token, current_token = token
            CURRENT.reset(current_token)
            self._context.detach(otel_token)

    def _marked_children(self, span: Any, ctx: Any, state: Mapping[str, Any]) -> None:
        marks = state.get("marks") or getattr(ctx, "marks", None)
        if not marks:
            return
        parent = self._trace.set_span_in_context(span)
        for name, start, end in MARKED_SPANS:
            if start in marks and end in marks:
                child = self.tracer.start_span(
                    name, context=parent, kind=self._internal, start_time=to_unix_ns(marks[start])
                )
                if name != "ledger settle":
                    child.set_attribute("hybridfast.cache", ctx.cache)
                child.end(end_time=to_unix_ns(marks[end]))

    # --- pipeline hooks -------------------------------------------------------------------

    async def attempt_start(self, ctx: Any, attempt: Any) -> None:
        if not self._trace.get_current_span().is_recording():
            return  # the request's trace is not sampled
        route_start = ctx.state.pop(ROUTE_START, None)
        if route_start is not None and not _has_marks(ctx):
            # What happened between the request's checks and its first upstream call.
            self._child("cache lookup and route", route_start, attempt.started, ctx)
        dep = attempt.deployment
        span = self.tracer.start_span(
            f"{_operation(getattr(ctx, 'endpoint', 'chat'))} {dep.model}",
            kind=self._client,
            start_time=to_unix_ns(attempt.started),
            attributes={
                "gen_ai.operation.name": _operation(getattr(ctx, "endpoint", "chat")),
                "gen_ai.provider.name": _provider(dep.kind),
                "gen_ai.request.model": dep.model,
                "hybridfast.deployment": dep.id,
                "hybridfast.attempt": attempt.index,
                "hybridfast.fallback": attempt.index > 0 or ctx.fallbacks > 0,
                "hybridfast.recovery": bool(ctx.recovered),
            },
        )
        ctx.state.setdefault(ATTEMPT_SPANS, {})[id(attempt)] = span
        # The upstream call continues this trace, with this attempt as its parent.
        headers: dict[str, str] = {}
        self._propagator.inject(headers, self._trace.set_span_in_context(span))
        CALL_HEADERS.set(headers)

    async def attempt_end(self, ctx: Any, attempt: Any) -> None:
        span = ctx.state.get(ATTEMPT_SPANS, {}).pop(id(attempt), None)
        if span is None:
            return
        CALL_HEADERS.set(None)
        if attempt.ended is not None:
            ctx.state[LAST_ATTEMPT_END] = attempt.ended
        span.set_attribute("hybridfast.outcome", attempt.outcome)
        if attempt.usage is not None:
            span.set_attributes(_usage_attributes(attempt.usage))
            span.set_attribute("gen_ai.response.model", attempt.deployment.model)
        span.set_attribute("hybridfast.cost_usd", format_usd(attempt.cost))
        if attempt.outcome not in ("ok", "pending"):
            span.set_status(self._error)
            span.set_attribute("error.type", str(attempt.upstream_status or attempt.outcome))
        span.end(end_time=to_unix_ns(attempt.ended) if attempt.ended else _now_ns())

    async def before_route(self, ctx: Any) -> None:
        if self._trace.get_current_span().is_recording():
            ctx.state[ROUTE_START] = time.perf_counter()

    def _child(self, name: str, start: float, end: float, ctx: Any) -> None:
        span = self.tracer.start_span(name, kind=self._internal, start_time=to_unix_ns(start))
        span.set_attribute("hybridfast.cache", ctx.cache)
        span.end(end_time=to_unix_ns(end))

    async def after_answer(self, ctx: Any, request: Any, answer: Any) -> None:
        if not _has_marks(ctx):
            now = time.perf_counter()
            settle_from = ctx.state.pop(LAST_ATTEMPT_END, None)
            if settle_from is not None:  # from the last upstream byte to the ledger line
                self._child("ledger settle", settle_from, now, ctx)
            else:  # no upstream call: a cache hit, or refused before routing ended
                route_start = ctx.state.pop(ROUTE_START, None)
                if route_start is not None:
                    self._child("cache lookup and settle", route_start, now, ctx)
        reason = getattr(answer, "finish_reason", None)
        if reason:
            ctx.state[FINISH_REASONS] = [reason]
        if self.settings.record_content and hasattr(request, "messages"):
            content = {"gen_ai.input.messages": orjson.dumps(request.messages).decode()}
            if answer is not None and hasattr(answer, "content"):
                content["gen_ai.output.messages"] = orjson.dumps(
                    [{"role": "assistant", "content": answer.content}]
                ).decode()
            ctx.state[CONTENT] = content

    def shutdown(self) -> None:
        self.provider.shutdown()  # exports what is still queued


def _has_marks(ctx: Any) -> bool:
    """Whether the pipeline marks its own steps (then those spans are made from them)."""
    return bool(ctx.state.get("marks") or getattr(ctx, "marks", None))


def _operation(endpoint: str) -> str:
    return "embeddings" if endpoint == "embeddings" else "chat"


def _provider(kind: str) -> str:
    # The semantic conventions' well-known names; others pass through.
    return {"openai-compatible": "openai", "local": "hybridfast.local"}.get(kind, kind)


def _usage_attributes(usage: Any) -> dict[str, Any]:
    return {
        "gen_ai.usage.input_tokens": usage.input_tokens,
        "gen_ai.usage.output_tokens": usage.output_tokens,
        "gen_ai.usage.cache_read.input_tokens": usage.cached_input_tokens,
        "gen_ai.usage.cache_creation.input_tokens": usage.cache_write_tokens,
    }


def _request_attributes(record: RequestRecord) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": _operation(record.endpoint),
        "gen_ai.request.model": record.route,
        "gen_ai.usage.input_tokens": record.input_tokens,
        "gen_ai.usage.output_tokens": record.output_tokens,
        "gen_ai.usage.cache_read.input_tokens": record.cached_input_tokens,
        "gen_ai.usage.cache_creation.input_tokens": record.cache_write_tokens,
        "http.response.status_code": record.status,
        "hybridfast.request_id": record.request_id,
        "hybridfast.route": record.route,
        "hybridfast.cache": record.cache,
        "hybridfast.cost_usd": format_usd(record.cost_picos),
        "hybridfast.fallbacks": record.fallbacks,
        "hybridfast.recovered": record.recovered,
        "hybridfast.stream": record.stream,
    }
    if record.deployment is not None:
        attributes["hybridfast.deployment"] = record.deployment
    if record.model is not None:
        attributes["gen_ai.response.model"] = record.model
    if record.provider is not None:
        attributes["hybridfast.provider"] = record.provider
    return attributes


def open_tracing(settings: TracingConfig) -> Tracing | None:
    """The tracer when tracing is on and the `otel` extra is installed, else None."""
    if not wanted(settings):
        return None
    try:
        return Tracing(settings)
    except ImportError:
        log.warning(
            "tracing is on but OpenTelemetry is not installed: pip install 'hybridfast[otel]'"
        )
        return None


# --- the pipeline hooks (registered by `hybridfast.observability.hooks.install`) -----------


async def on_before_route(ctx: Any, request: Any) -> None:
    tracing = CURRENT.get()
    if tracing is not None:
        await tracing.before_route(ctx)


async def on_attempt_start(ctx: Any, attempt: Any) -> None:
    tracing = CURRENT.get()
    if tracing is not None:
        await tracing.attempt_start(ctx, attempt)


async def on_attempt_end(ctx: Any, attempt: Any) -> None:
    tracing = CURRENT.get()
    if tracing is not None:
        await tracing.attempt_end(ctx, attempt)


async def on_answer(ctx: Any, request: Any, answer: Any) -> None:
    tracing = CURRENT.get()
    if tracing is not None:
        await tracing.after_answer(ctx, request, answer)
