"""The aiohttp application: `create_app(config)` and `run_app(config)`.

Endpoints: `POST /v1/chat/completions` (OpenAI), `POST /v1/messages` (Anthropic),
`POST /v1/embeddings`, `GET /v1/models`, `GET /healthz`, `GET /readyz`, `GET /metrics`, and
the admin routes of the ledger and the cache (`/admin/...`, master key only).

The `Gateway` (router, ledger, cache, provider sessions) is opened in `cleanup_ctx` and
reached by handlers as `request.app[gateway_key]`. One middleware authenticates and turns
every error into the client protocol's own error shape with a stable code; handlers read
top to bottom.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hybridfast._core import HybridfastError
from hybridfast.config import Config
from hybridfast.embeddings import builtin_models
from hybridfast.errors import GatewayError, RequestTooLarge, Unauthorized
from hybridfast.gateway import ANONYMOUS, CallInfo, Gateway, to_gateway_error
from hybridfast.metrics import REGISTRY
from hybridfast.protocols import anthropic as anthropic_protocol
from hybridfast.protocols import openai as openai_protocol
from hybridfast.server import model_endpoints, observability
from hybridfast.server import responses as responses_endpoints
from hybridfast.server.features import INSTALLERS, ROUTES
from hybridfast.types import Caller

log = logging.getLogger("hybridfast.server")

config_key = web.AppKey("config", Config)
gateway_key = web.AppKey("gateway", Gateway)
# The Gateway opens (ledger, cache, router) in the background so /healthz answers at once;
# requests that need it wait for this task.
opening_key = web.AppKey("opening", asyncio.Task[None])
# Per request: the bookkeeping (for error headers) and who is calling.
INFO = web.RequestKey("info", CallInfo)
CALLER = web.RequestKey("caller", Caller)

_OPEN_PATHS = frozenset({"/healthz", "/readyz"})
_JSON = "application/json"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --- middleware: auth and errors ---------------------------------------------------------


def _protocol(path: str) -> Any:
    return anthropic_protocol if path.startswith("/v1/messages") else openai_protocol


def _error_response(request: web.Request, err: GatewayError) -> web.Response:
    info: CallInfo | None = request.get(INFO)
    headers = dict(err.headers)
    if info is not None:
        info.status = err.status
        headers.update(info.headers())
    return web.Response(
        status=err.status,
        body=_protocol(request.path).error_body(err),
        content_type=_JSON,
        headers=headers,
    )


def _http_error(exc: web.HTTPException) -> GatewayError:
    if exc.status == 413:
        return RequestTooLarge(exc.text or "the request body is too large")
    if exc.status == 404:
        return GatewayError(
            "no such endpoint", code="ERR_NOT_FOUND", status=404, hint="see GET /v1/models"
        )
    if exc.status == 405:
        return GatewayError("method not allowed", code="ERR_METHOD_NOT_ALLOWED", status=405)
    return GatewayError(exc.reason, code="ERR_HTTP", status=exc.status)


def _callers(config: Config) -> dict[str, Caller]:
    callers = {
        k.key: Caller(key_name=k.name, user=k.user, team=k.team, tags=tuple(k.tags))
        for k in config.keys
    }
    if config.server.master_key:
        callers[config.server.master_key] = Caller(key_name="master")
    return callers


def _presented_key(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token:
            return token.strip()
    return request.headers.get("x-api-key")


def make_middleware(config: Config) -> Any:
    callers = _callers(config)
    master = config.server.master_key
    need_auth = bool(callers)

    @web.middleware
    async def gateway_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if request.path not in _OPEN_PATHS:
                opening = request.app[opening_key]
                if not opening.done():
                    await asyncio.shield(opening)
                elif opening.exception() is not None:
                    raise GatewayError(
                        "the gateway failed to start",
                        code="ERR_NOT_READY",
                        status=503,
                        hint="the gateway log says why",
                    )
            if need_auth and request.path not in _OPEN_PATHS:
                key = _presented_key(request)
                caller = callers.get(key) if key else None
                if caller is None:
                    raise Unauthorized("missing or unknown API key")
                if request.path.startswith("/admin") and key != master:
                    raise GatewayError(
                        "the admin API needs the master key",
                        code="ERR_FORBIDDEN",
                        status=403,
                        hint="send server.master_key as the bearer token",
                    )
                request[CALLER] = caller
            return await handler(request)
        except GatewayError as err:
            return _error_response(request, err)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _error_response(request, _http_error(exc))
        except HybridfastError as exc:
            return _error_response(request, to_gateway_error(exc))
        except ConnectionResetError:
            # The client went away; nobody is left to answer.
            return web.Response(status=499)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            return _error_response(
                request,
                GatewayError("internal error", hint="the gateway log has the details"),
            )

    return gateway_middleware


# --- chat -------------------------------------------------------------------------------


def _caller(request: web.Request, user: str | None) -> Caller:
    caller: Caller = request.get(CALLER, ANONYMOUS)
    if user and caller.user is None:
        caller = Caller(key_name=caller.key_name, user=user, team=caller.team, tags=caller.tags)
    return caller


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """POST /v1/chat/completions — the OpenAI Chat Completions API."""
    return await _chat(request, openai_protocol)


async def messages(request: web.Request) -> web.StreamResponse:
    """POST /v1/messages — the Anthropic Messages API."""
    return await _chat(request, anthropic_protocol)


async def _chat(request: web.Request, protocol: Any) -> web.StreamResponse:
    gateway = request.app[gateway_key]
    info = CallInfo()
    request[INFO] = info
    raw = await request.read()
    chat = protocol.parse_request(raw, request.headers)
    info.route = chat.model
    caller = _caller(request, chat.user)

    if not chat.stream:
        answer = await gateway.complete(chat, caller, info)
        body = protocol.answer_body(answer, info.request_id, chat.model, info.meta())
        return web.Response(body=body, content_type=_JSON, headers=info.headers())

    events = gateway.stream_events(chat, caller, info)
    try:
        first = await anext(events)  # errors before the first byte become an error answer
        if protocol is openai_protocol:
            encoder: Any = openai_protocol.StreamEncoder(
                info.request_id, chat.model, chat.include_usage
            )
        else:
            encoder = anthropic_protocol.StreamEncoder(
                info.request_id, chat.model, info.input_estimate
            )
        response = web.StreamResponse(
            headers=info.headers(cost_known=info.cache != "miss" and info.cache != "bypass")
        )
        response.content_type = "text/event-stream"
        response.headers["Cache-Control"] = "no-cache"
        await response.prepare(request)
        await response.write(encoder.start() + encoder.events(first))
        try:
            async for batch in events:
                data = encoder.events(batch)
                if data:
                    await response.write(data)
        except (GatewayError, HybridfastError) as exc:
            await response.write(encoder.error(to_gateway_error(exc)))
            await response.write_eof()
            return response
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as exc:
            log.exception("request %s: the stream failed", info.request_id)
            await response.write(encoder.error(to_gateway_error(exc)))
            await response.write_eof()
            return response
        await response.write(encoder.end(info.usage, info.meta(), chat.include_usage))
        await response.write_eof()
        return response
    finally:
        await events.aclose()


# --- the rest ---------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type=_JSON)


async def readyz(request: web.Request) -> web.Response:
    gateway = request.app.get(gateway_key)
    opening = request.app.get(opening_key)
    if gateway is None or opening is None or not opening.done():
        return web.Response(status=503, body=b'{"status":"starting"}', content_type=_JSON)
    if opening.cancelled() or opening.exception() is not None:
        return web.Response(status=503, body=b'{"status":"failed"}', content_type=_JSON)
    body: dict[str, Any] = {
        "status": "ready",
        "deployments": len(gateway.deployments),
        "providers": sorted(gateway.providers),
    }
    health = getattr(gateway.router, "health", None)
    if callable(health):
        with contextlib.suppress(Exception):
            body["router"] = health()
    return web.Response(body=orjson.dumps(body, default=str), content_type=_JSON)


async def list_models(request: web.Request) -> web.Response:
    """GET /v1/models — groups, routes and deployments, in OpenAI's list shape."""
    gateway = request.app[gateway_key]
    groups: dict[str, list[str]] = {}
    for d in gateway.deployments:
        groups.setdefault(d.name, []).append(d.id)
    created = int(time.time())
    data: list[dict[str, Any]] = [
        {
            "id": name,
            "object": "model",
            "created": created,
            "owned_by": "hybridfast",
            "x_hybridfast": {"kind": "group", "deployments": ids},
        }
        for name, ids in groups.items()
    ]
    data += [
        {
            "id": name,
            "object": "model",
            "created": created,
            "owned_by": "hybridfast",
            "x_hybridfast": {
                "kind": "route",
                "strategy": route.strategy,
                "candidates": route.candidates,
            },
        }
        for name, route in gateway.config.routes.items()
    ]
    data += [
        {
            "id": name,
            "object": "model",
            "created": created,
            "owned_by": "hybridfast",
            "x_hybridfast": {"kind": "builtin", "capabilities": ["embeddings"]},
        }
        for name in builtin_models(gateway.config)
    ]
    return web.Response(body=orjson.dumps({"object": "list", "data": data}), content_type=_JSON)


async def prometheus(request: web.Request) -> web.Response:
    return web.Response(
        body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def embeddings(request: web.Request) -> web.StreamResponse:
    from hybridfast.embeddings.http import handle_embeddings

    return await handle_embeddings(request)


# --- the app ----------------------------------------------------------------------------


def create_app(
    config: Config,
    *,
    gateway: Gateway | None = None,
    background_open: bool = False,
    failed: list[str] | None = None,
) -> web.Application:
    """The application; the Gateway (or the one given, for tests) opens with the app: by
    default before it serves (so `app[gateway_key]` is open once the app started), with
    `background_open` (what `serve` does) while /healthz already answers and requests wait
    for it. If it cannot open in the background, `failed` gets the reason and the process
    is sent SIGTERM."""
    failed = failed if failed is not None else []
    app = web.Application(
        client_max_size=config.server.max_body_bytes,
        middlewares=[make_middleware(config)],
        handler_args={"max_field_size": 16384},
    )
    app[config_key] = config

    async def gateway_ctx(app: web.Application) -> AsyncIterator[None]:
        gw = gateway if gateway is not None else Gateway(config)
        for install in INSTALLERS:  # features attach their hooks before the gateway opens
            install(gw)
        app[gateway_key] = gw

        async def open_gateway() -> None:
            try:
                await gw.open()
            except Exception as exc:
                # Nothing can be served: say why, and stop the process (serve exits 2).
                if isinstance(exc, HybridfastError):
                    log.error("the gateway could not start: %s", exc)
                else:
                    log.exception("the gateway could not start")
                failed.append(str(exc) or type(exc).__name__)
                signal.raise_signal(signal.SIGTERM)
                raise

        if background_open:
            opening = asyncio.ensure_future(open_gateway())
        else:
            await gw.open()
            opening = asyncio.ensure_future(asyncio.sleep(0))
            await opening
        app[opening_key] = opening
        try:
            yield
        finally:
            if not opening.done():
                opening.cancel()
            with contextlib.suppress(BaseException):
                await opening
            await gw.close()

    app.cleanup_ctx.append(gateway_ctx)
    # Outermost middleware and first to open, last to close: sees every API request.
    observability.install(app, config, INFO)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", prometheus)
    app.router.add_get("/v1/models", list_models)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/chat/completions", chat_completions)
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/embeddings", embeddings)
    responses_endpoints.setup(
        app, config, gateway_key=gateway_key, info_key=INFO, caller_of=_caller
    )
    model_endpoints.setup(app, gateway_key=gateway_key)

    from hybridfast.server import admin_cache, admin_spend

    app.router.add_routes(admin_spend.routes)
    app.router.add_routes(admin_cache.routes)
    for routes in ROUTES:
        app.router.add_routes(routes)
    return app


def run_app(config: Config, *, source: str) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency everywhere but Windows
        pass
    log.info("hybridfast: config from %s", source)
    failed: list[str] = []
    web.run_app(
        create_app(config, background_open=True, failed=failed),
        host=config.server.host,
        port=config.server.port,
        access_log=None,
        print=lambda msg: log.info(msg.strip()),
        loop=asyncio.new_event_loop(),
        backlog=1024,
    )
    if failed:
        raise GatewayError(
            f"the gateway could not start: {failed[0]}",
            code="ERR_NOT_READY",
            hint="check the config section the message names",
        )
