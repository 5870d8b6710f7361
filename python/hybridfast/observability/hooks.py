"""The pipeline hooks of observability (listed in `hybridfast.server.features.INSTALLERS`):
the trace's spans when tracing is on, nothing otherwise. Everything else is recorded once
per request by the server's middleware, from the request context (the first attempt's
start, for the queue time, is the pipeline's own mark: `ctx.marks["attempt_start"]`)."""

from __future__ import annotations

from typing import Any

from hybridfast.observability import tracing


def install(gateway: Any) -> None:
    if not tracing.wanted(gateway.config.observability.tracing):
        return
    hooks = gateway.hooks
    # Last among before_route hooks: the span starts when the request is admitted.
    hooks.add("before_route", tracing.on_before_route, name="tracing", order=1000)
    hooks.add("attempt_start", tracing.on_attempt_start, name="tracing", order=1)
    hooks.add("attempt_end", tracing.on_attempt_end, name="tracing", order=1)
    hooks.add("after_answer", tracing.on_answer, name="tracing", order=1)
