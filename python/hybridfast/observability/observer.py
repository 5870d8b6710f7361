"""`Observer`: where a finished request goes — Prometheus families, the request log, the
live feed, the request's log line and its trace span — built once per server from the
`observability` config section.

`record_for()` turns the pipeline's request context into a `RequestRecord` once; each sink
then does a few dict updates or a deque append. Nothing here waits on I/O.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from hybridfast import metrics
from hybridfast.config import Config
from hybridfast.ledger import metrics as ledger_metrics
from hybridfast.observability import logs
from hybridfast.observability.live import LiveAggregator
from hybridfast.observability.record import RequestRecord
from hybridfast.observability.request_log import (
    Backend,
    PostgresBackend,
    RequestLog,
    SqliteBackend,
)
from hybridfast.observability.tracing import Tracing

log = logging.getLogger("hybridfast.observability")

# The pipeline's mark of the first attempt's start (perf_counter), in `ctx.marks`.
FIRST_ATTEMPT = "attempt_start"
TRACE_ID = "observability.trace_id"
# Requests a hook ran inside this one (a prompt chain's earlier steps), as their contexts in
# `ctx.state`: the server records each as a row of its own once the request ends.
INNER_REQUESTS = "observability.inner_requests"


def record_for(
    ctx: Any, *, status: int, code: str | None, endpoint: str | None = None
) -> RequestRecord:
    """The record of a finished request from its context (`RequestContext`, or the older
    `CallInfo`; None when the request failed before it had one)."""
    now = time.perf_counter()
    ended = getattr(ctx, "ended", None) or now
    latency_s = ended - ctx.started
    dep = ctx.deployment
    caller = getattr(ctx, "caller", None)
    usage = ctx.usage
    stream = bool(ctx.stream)
    first_byte = ctx.first_byte
    ttft_ms = inter_token_ms = None
    if stream and first_byte is not None:
        ttft_ms = max(0.0, first_byte - ctx.started) * 1000
        if usage.output_tokens > 1:
            inter_token_ms = max(0.0, ended - first_byte) * 1000 / (usage.output_tokens - 1)
    state = getattr(ctx, "state", None) or {}
    marks = getattr(ctx, "marks", None)
    first_attempt = marks.get(FIRST_ATTEMPT) if marks else None
    answer_headers = getattr(ctx, "response_headers", None)
    limits = _ratelimits(answer_headers) if answer_headers else (None, None)
    return RequestRecord(
        ts_ms=int(time.time() * 1000),
        request_id=ctx.request_id,
        parent_id=getattr(ctx, "parent_id", None),
        trace_id=state.get(TRACE_ID),
        endpoint=endpoint or str(getattr(ctx, "endpoint", "chat")),
        status=status,
        code=code,
        route=ctx.route,
        deployment=dep.id if dep is not None else None,
        provider=dep.provider if dep is not None else None,
        model=dep.model if dep is not None else None,
        key_name=caller.key_name if caller is not None else None,
        team=caller.team if caller is not None else None,
        user_name=caller.user if caller is not None else None,
        stream=stream,
        cache=ctx.cache,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cached_input_tokens=usage.cached_input_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        cost_picos=ctx.cost,
        latency_ms=latency_s * 1000,
        ttft_ms=ttft_ms,
        overhead_ms=max(0.0, latency_s - ctx.upstream_s) * 1000,
        upstream_ms=ctx.upstream_s * 1000,
        queue_ms=None if first_attempt is None else (first_attempt - ctx.started) * 1000,
        inter_token_ms=inter_token_ms,
        fallbacks=ctx.fallbacks,
        recovered=bool(ctx.recovered),
        ratelimit_requests=limits[0],
        ratelimit_tokens=limits[1],
    )


def _ratelimits(headers: dict[str, str]) -> tuple[int | None, int | None]:
    """The rate-limit counters the answer carries (`x-ratelimit-remaining-*`)."""
    out: list[int | None] = []
    for kind in ("requests", "tokens"):
        value = headers.get(f"x-ratelimit-remaining-{kind}")
        out.append(int(value) if value is not None and value.isdigit() else None)
    return out[0], out[1]


def edge_record(
    request_id: str, started: float, *, status: int, code: str | None, endpoint: str
) -> RequestRecord:
    """A request refused before the pipeline saw it (bad JSON, unknown key, too large)."""
    return RequestRecord(
        ts_ms=int(time.time() * 1000),
        request_id=request_id,
        endpoint=endpoint,
        status=status,
        code=code,
        latency_ms=(time.perf_counter() - started) * 1000,
    )


def observe_metrics(record: RequestRecord) -> None:
    """The request's Prometheus samples."""
    dep = record.deployment or "none"
    status = str(record.status)
    stream = "true" if record.stream else "false"
    metrics.REQUESTS.inc((record.route, dep, status, record.code or "", record.cache))
    metrics.LATENCY.observe((record.route, dep, stream), record.latency_ms / 1000)
    if record.status >= 400:
        metrics.FAILURES.inc((record.route, dep, status, record.code or "ERR_UNKNOWN"))
    elif record.overhead_ms is not None:
        metrics.OVERHEAD.observe((stream,), record.overhead_ms / 1000)
    if record.deployment is not None and record.upstream_ms:
        metrics.UPSTREAM_LATENCY.observe((dep,), record.upstream_ms / 1000)
    if record.ttft_ms is not None:
        metrics.TTFT.observe((dep,), record.ttft_ms / 1000)
    if record.inter_token_ms is not None:
        metrics.INTER_TOKEN.observe((dep,), record.inter_token_ms / 1000)
    if record.queue_ms is not None:
        metrics.QUEUE.observe((record.route,), record.queue_ms / 1000)
    if record.fallbacks:
        metrics.FALLBACKS.inc((record.route,), record.fallbacks)
    if record.recovered:
        metrics.RECOVERIES.inc((record.route,))
    if record.ratelimit_requests is not None:
        metrics.RATELIMIT_REMAINING.set(
            (record.key_name or "", "requests"), record.ratelimit_requests
        )
    if record.ratelimit_tokens is not None:
        metrics.RATELIMIT_REMAINING.set((record.key_name or "", "tokens"), record.ratelimit_tokens)
    if record.input_tokens or record.output_tokens:
        cache = record.cache
        metrics.TOKENS.inc((dep, "input", cache), record.input_tokens)
        metrics.TOKENS.inc((dep, "output", cache), record.output_tokens)
        if record.cached_input_tokens:
            metrics.TOKENS.inc((dep, "cached_input", cache), record.cached_input_tokens)


def open_request_log(config: Config) -> RequestLog | None:
    """The request log beside the ledger (its own SQLite file, or the ledger's PostgreSQL
    database), or None when switched off."""
    settings = config.observability.request_log
    if not settings.enabled:
        return None
    ledger = config.ledger
    backend: Backend
    if ledger.backend == "postgres" and ledger.dsn:
        backend = PostgresBackend(ledger.dsn, ledger.schema)
    elif ledger.backend == "sqlite":
        backend = SqliteBackend(ledger.sibling("requests"), synchronous_full=False)
    else:
        backend = SqliteBackend(None)  # the ledger keeps nothing on disk: neither do we
    return RequestLog(
        backend,
        flush_interval_s=settings.flush_interval_ms / 1000,
        retention_days=settings.retention_days,
    )


class Observer:
    """The sinks of one server, fed one `RequestRecord` per request."""

    def __init__(
        self,
        *,
        request_log: RequestLog | None = None,
        live: LiveAggregator | None = None,
        request_lines: logs.RequestLines | None = None,
    ) -> None:
        self.request_log = request_log
        self.live = live if live is not None else LiveAggregator()
        self.request_lines = request_lines
        # The server's tracing when it is on (set by the server).
        self.tracing: Tracing | None = None

    @classmethod
    def from_config(cls, config: Config) -> Observer:
        obs = config.observability
        metrics.set_max_series(obs.metrics.max_series)
        ledger_metrics.count_by_key(obs.metrics.by_key)
        lines = obs.request_lines == "on" or (
            obs.request_lines == "auto" and obs.log_format == "json"
        )
        try:
            request_log = open_request_log(config)
        except Exception as exc:  # the ledger's own start says what is wrong with the store
            log.warning("the request log is off: its store did not open (%s)", exc)
            request_log = None
        return cls(
            request_log=request_log,
            request_lines=logs.RequestLines(obs.log_format) if lines else None,
        )

    def finish(self, record: RequestRecord) -> None:
        observe_metrics(record)
        self.live.add(record)
        if self.request_log is not None:
            self.request_log.add(record)
        if self.request_lines is not None:
            self.request_lines.add(record)

    async def close(self) -> None:
        await self.live.stop()
        if self.request_lines is not None:
            self.request_lines.flush()
        if self.request_log is not None:
            # Joins the writer thread after its last batch: not on the event loop.
            await asyncio.to_thread(self.request_log.close)
