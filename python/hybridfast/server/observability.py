"""The server side of observability: the middleware that ends every API request in the
`Observer` (metrics, request log, live feed, log line, trace span), and the admin API the
dashboard reads.

    GET /admin/requests            the request log, newest first, one page at a time
        ?key= &team= &model= &route= &deployment= &status= &cache= &code= &request_id=
        &since= &until= (Unix ms or ISO 8601)  &limit= (1..1000, default 100)  &cursor=
    GET /admin/requests/{id}       one request by its x-hybridfast-request-id
    GET /admin/live                server-sent events: one JSON summary per second
        ?backfill= (seconds of history first, default 60, at most 300)

The middleware sits outside the error middleware, so it sees what the client got: edge
refusals (bad JSON, unknown key, oversized body), errors in the client's shape, 499 when
the client left, cache hits — one record each.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from hybridfast._core import format_usd
from hybridfast.config import Config
from hybridfast.errors import GatewayError, InvalidRequest
from hybridfast.observability.observer import (
    INNER_REQUESTS,
    Observer,
    edge_record,
    record_for,
)
from hybridfast.observability.request_log import MAX_PAGE, Query, decode_cursor
from hybridfast.observability.tracing import Tracing, open_tracing
from hybridfast.pipeline.context import new_request_id

observer_key = web.AppKey("observer", Observer)
tracing_key = web.AppKey("tracing", Tracing)

# Paths whose requests are recorded (the APIs clients call; not /metrics, /admin, /ui).
OBSERVED_PREFIXES = ("/v1/", "/chat/", "/embeddings", "/completions", "/responses")
_JSON = "application/json"
_FILTERS = {
    "key": "key_name",
    "team": "team",
    "model": "model",
    "route": "route",
    "deployment": "deployment",
    "status": "status",
    "cache": "cache",
    "code": "code",
    "request_id": "request_id",
    "parent_id": "parent_id",  # a prompt chain's steps, by the chain's request id
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _endpoint(path: str) -> str:
    if "embeddings" in path:
        return "embeddings"
    if "responses" in path:
        return "responses"
    return "completions" if path.endswith("/completions") and "chat" not in path else "chat"


def _error_code(response: web.StreamResponse) -> str | None:
    """The stable code of an error answer (both protocols put it at error.code)."""
    body = getattr(response, "body", None)
    if not isinstance(body, bytes | bytearray):
        return None
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        code = orjson.loads(body)["error"]["code"]
        return code if isinstance(code, str) else None
    return None


def make_middleware(context_key: web.RequestKey[Any]) -> Any:
    """The observing middleware; `context_key` is where handlers keep the request context."""

    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        observer = request.app.get(observer_key)
        if observer is None or not request.path.startswith(OBSERVED_PREFIXES):
            return await handler(request)
        started = time.perf_counter()
        tracing = observer.tracing  # not app.get(tracing_key): a missing key raises inside
        span = token = None
        if tracing is not None:
            span, token = tracing.start_request(request.headers, request.path)
        # Unless an answer says otherwise, the client went away.
        status: int = 499
        code: str | None = "ERR_CLIENT_GONE"
        try:
            response = await handler(request)
            status, code = response.status, None
            if status == 499:  # the error middleware's answer to a client that left
                code = "ERR_CLIENT_GONE"
            elif status >= 400:
                code = _error_code(response)
            return response
        except web.HTTPException as exc:
            status, code = exc.status, None
            raise
        finally:
            ctx = request.get(context_key)
            if ctx is not None:
                # A stream that failed after its 200 headers: the pipeline's status counts.
                if ctx.status >= 400 and status < 400:
                    status = ctx.status
                error = getattr(ctx, "error", None)
                if status >= 400 and code is None and error is not None:
                    code = error.code
                record = record_for(ctx, status=status, code=code, endpoint=_endpoint(request.path))
            else:
                record = edge_record(
                    new_request_id(),
                    started,
                    status=status,
                    code=code,
                    endpoint=_endpoint(request.path),
                )
            if span is not None and tracing is not None:
                record.trace_id = tracing.trace_id(span)
                tracing.end_request(span, token, record, ctx)
            observer.finish(record)
            if ctx is not None and INNER_REQUESTS in ctx.state:
                _finish_inner(observer, ctx.state[INNER_REQUESTS], record.endpoint)

    return observe


def _finish_inner(observer: Observer, contexts: list[Any], endpoint: str) -> None:
    """The rows of requests a hook made inside the client's (a chain's earlier steps)."""
    for inner in contexts:
        error = getattr(inner, "error", None)
        status = inner.status
        code = error.code if error is not None and status >= 400 else None
        observer.finish(record_for(inner, status=status, code=code, endpoint=endpoint))


def install(app: web.Application, config: Config, context_key: web.RequestKey[Any]) -> None:
    """Adds the middleware (outermost), the admin routes, and the observer's lifetime."""
    app.middlewares.insert(0, make_middleware(context_key))
    app.router.add_routes(routes)

    async def observer_ctx(app: web.Application) -> AsyncIterator[None]:
        observer = Observer.from_config(config)
        app[observer_key] = observer
        tracing = open_tracing(config.observability.tracing)
        if tracing is not None:
            app[tracing_key] = tracing
        observer.tracing = tracing
        observer.live.start()
        try:
            yield
        finally:
            await observer.close()
            if tracing is not None:
                await asyncio.to_thread(tracing.shutdown)

    app.cleanup_ctx.insert(0, observer_ctx)


def installer(
    config: Config, context_key: web.RequestKey[Any]
) -> Callable[[web.Application], None]:
    return lambda app: install(app, config, context_key)


# --- the admin API ------------------------------------------------------------------------

routes = web.RouteTableDef()


def _time_ms(name: str, text: str) -> int:
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(
            f"`{name}` is neither Unix milliseconds nor an ISO 8601 time: {text[:40]!r}",
            hint="e.g. since=2026-12-03T10:00:00Z or since=1796292000000",
        ) from None
    if moment.tzinfo is None:
        raise InvalidRequest(f"`{name}` needs a time zone", hint="end it with Z or +00:00")
    return int(moment.timestamp() * 1000)


def parse_query(params: Any) -> Query:
    """The page a `GET /admin/requests` query string asks for; 400 for anything unknown."""
    unknown = set(params) - {*_FILTERS, "since", "until", "limit", "cursor"}
    if unknown:
        raise InvalidRequest(
            f"unknown query parameter {sorted(unknown)[0]!r}",
            hint=f"filters: {', '.join(_FILTERS)}; and since, until, limit, cursor",
        )
    filters: list[tuple[str, Any]] = []
    for name, column in _FILTERS.items():
        if name in params:
            value: Any = params[name]
            if column == "status":
                if not value.isdigit() or not 100 <= int(value) <= 599:
                    raise InvalidRequest("`status` must be an HTTP status such as 429")
                value = int(value)
            filters.append((column, value))
    limit_text = params.get("limit", "100")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_PAGE:
        raise InvalidRequest(f"`limit` must be a whole number from 1 to {MAX_PAGE}")
    return Query(
        filters=tuple(filters),
        since_ms=_time_ms("since", params["since"]) if "since" in params else None,
        until_ms=_time_ms("until", params["until"]) if "until" in params else None,
        cursor=decode_cursor(params["cursor"]) if params.get("cursor") else None,
        limit=int(limit_text),
    )


def _public(row: dict[str, Any]) -> dict[str, Any]:
    row["cost_usd"] = format_usd(row["cost_picos"])
    return row


def _request_log(request: web.Request) -> Any:
    observer = request.app.get(observer_key)
    if observer is None or observer.request_log is None:
        raise GatewayError(
            "the request log is off",
            code="ERR_NOT_ENABLED",
            status=404,
            hint="set observability.request_log.enabled: true",
        )
    return observer.request_log


@routes.get("/admin/requests")
async def list_requests(request: web.Request) -> web.Response:
    query = parse_query(request.query)
    page = await _request_log(request).page(query)
    body = {
        "object": "list",
        "data": [_public(r) for r in page.rows],
        "has_more": page.next_cursor is not None,
        "next_cursor": page.next_cursor,
    }
    return web.Response(body=orjson.dumps(body), content_type=_JSON)


@routes.get("/admin/requests/{request_id}")
async def get_request(request: web.Request) -> web.Response:
    query = Query(filters=(("request_id", request.match_info["request_id"]),), limit=1)
    page = await _request_log(request).page(query)
    if not page.rows:
        raise GatewayError(
            "no such request in the log",
            code="ERR_NOT_FOUND",
            status=404,
            hint="rows are written within a second and kept for retention_days",
        )
    return web.Response(body=orjson.dumps(_public(page.rows[0])), content_type=_JSON)


@routes.get("/admin/live")
async def live(request: web.Request) -> web.StreamResponse:
    backfill_text = request.query.get("backfill", "60")
    if not backfill_text.isdigit() or int(backfill_text) > 300:
        raise InvalidRequest("`backfill` must be a whole number of seconds from 0 to 300")
    observer = request.app[observer_key]
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    with contextlib.suppress(ConnectionResetError):
        async for line in observer.live.follow(int(backfill_text)):
            await response.write(b"data: " + line + b"\n\n")
    return response
