"""The pipeline hooks of observability (listed in `hybridfast.server.features.INSTALLERS`):
the first attempt's start (queue time) always, and the trace's attempt spans when tracing
is on. Everything else is recorded once per request by the server's middleware."""

from __future__ import annotations

from typing import Any

from hybridfast.observability import tracing
from hybridfast.observability.observer import FIRST_ATTEMPT


async def mark_first_attempt(ctx: Any, attempt: Any) -> None:
    ctx.state.setdefault(FIRST_ATTEMPT, attempt.started)


def install(gateway: Any) -> None:
    hooks = gateway.hooks
    hooks.add("attempt_start", mark_first_attempt, name="observability", order=0)
    if tracing.wanted(gateway.config.observability.tracing):
        # Last among before_route hooks: the span starts when the request is admitted.
        hooks.add("before_route", tracing.on_before_route, name="tracing", order=1000)
        hooks.add("attempt_start", tracing.on_attempt_start, name="tracing", order=1)
        hooks.add("attempt_end", tracing.on_attempt_end, name="tracing", order=1)
        hooks.add("after_answer", tracing.on_answer, name="tracing", order=1)
