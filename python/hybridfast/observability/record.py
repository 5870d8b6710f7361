"""`RequestRecord`: what one finished request says about itself, built once when it ends
and handed to every sink (metrics, the JSON log line, the request log, the live feed).

It holds names, numbers and codes only: never a key, a prompt or an answer. Money is integer
picodollars; times are milliseconds (floats: they are measurements, not money).
"""

from __future__ import annotations

from typing import Any

import msgspec

# The request log's columns, in the order of `RequestRecord.row()`.
ROW_FIELDS = (
    "ts_ms",
    "request_id",
    "trace_id",
    "endpoint",
    "route",
    "deployment",
    "provider",
    "model",
    "key_name",
    "team",
    "user_name",
    "status",
    "code",
    "stream",
    "cache",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "cost_picos",
    "latency_ms",
    "ttft_ms",
    "overhead_ms",
    "fallbacks",
    "recovered",
    "parent_id",
)


class RequestRecord(msgspec.Struct, kw_only=True, gc=False):
    """One request, as every observability sink sees it."""

    ts_ms: int
    request_id: str
    endpoint: str
    status: int
    route: str = ""
    deployment: str | None = None
    provider: str | None = None
    model: str | None = None
    key_name: str | None = None
    team: str | None = None
    user_name: str | None = None
    trace_id: str | None = None
    code: str | None = None  # the stable ERR_... code of a failed request
    stream: bool = False
    cache: str = "bypass"  # hit, semantic-hit, miss, bypass
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    cost_picos: int = 0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    overhead_ms: float | None = None
    upstream_ms: float = 0.0
    queue_ms: float | None = None
    inter_token_ms: float | None = None
    fallbacks: int = 0
    recovered: bool = False
    # What the caller's tightest rate limit had left after this request (when one applies).
    ratelimit_requests: int | None = None
    ratelimit_tokens: int | None = None
    parent_id: str | None = None  # the request this is a step of (a prompt chain's id)

    @property
    def failed(self) -> bool:
        return self.status >= 400

    def row(self) -> tuple[Any, ...]:
        """The request log's row (`ROW_FIELDS` order)."""
        return (
            self.ts_ms,
            self.request_id,
            self.trace_id,
            self.endpoint,
            self.route,
            self.deployment,
            self.provider,
            self.model,
            self.key_name,
            self.team,
            self.user_name,
            self.status,
            self.code,
            int(self.stream),
            self.cache,
            self.input_tokens,
            self.output_tokens,
            self.cached_input_tokens,
            self.cache_write_tokens,
            self.cost_picos,
            self.latency_ms,
            self.ttft_ms,
            self.overhead_ms,
            self.fallbacks,
            int(self.recovered),
            self.parent_id,
        )
