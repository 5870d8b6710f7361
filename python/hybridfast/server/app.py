"""The aiohttp application: `create_app(config)` and `run_app(config)`.

    state.py        app keys (gateway, config, opening) and per-request keys (context, caller)
    auth.py         API keys → callers
    middleware.py   the one middleware: readiness, auth, errors in the client's shape
    chat.py         every chat-like protocol through one handler (`add_chat_endpoint`)
    embeddings.py   POST /v1/embeddings
    health.py       /healthz, /readyz, /v1/models, /metrics
    admin/          /admin/spend, /admin/budgets, /admin/cache (master key only)
    features.py     one line per feature: hook installers, extra routes, chat endpoints

The `Gateway` (router, ledger, cache, provider sessions) is opened in `cleanup_ctx` and
reached by handlers as `request.app[gateway_key]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from prometheus_client import generate_latest

from hybridfast import redact
from hybridfast._core import HybridfastError
from hybridfast.config import Config
from hybridfast.discovery import Rediscovery
from hybridfast.errors import GatewayError
from hybridfast.metrics import REGISTRY
from hybridfast.pipeline.gateway import Gateway
from hybridfast.protocols.anthropic import ANTHROPIC_MESSAGES
from hybridfast.protocols.openai import OPENAI_CHAT
from hybridfast.security import tls
from hybridfast.server import observability, ui, workers
from hybridfast.server import responses as responses_endpoints
from hybridfast.server.admin import cache as admin_cache
from hybridfast.server.admin import spend as admin_spend
from hybridfast.server.chat import add_chat_endpoint
from hybridfast.server.embeddings import embeddings
from hybridfast.server.features import CHAT_ENDPOINTS, INSTALLERS, MIDDLEWARES, ROUTES
from hybridfast.server.health import healthz, list_models, prometheus, readyz
from hybridfast.server.middleware import install_default_protocols, make_middleware
from hybridfast.server.rediscovery import rediscovery_ctx
from hybridfast.server.reload import sighup_ctx
from hybridfast.server.state import (
    CALLER,
    CONTEXT,
    Lifecycle,
    config_source_key,
    gateway_key,
    lifecycle_key,
    opening_key,
)

__all__ = [
    "CALLER",
    "CONTEXT",
    "INFO",
    "create_app",
    "gateway_key",
    "opening_key",
    "run_app",
]

log = logging.getLogger("hybridfast.server")

INFO = CONTEXT  # the request context's older name

# `serve`'s collector settings. Nearly every object a request makes is freed by reference
# counting; the cyclic collector only finds cycles, yet by default it runs every 700
# allocations and, now and then, walks every object of the process (the modules, the
# config, the gateway: ~64k objects, ~0.1 s each time at 16 concurrent). Objects that exist
# once the gateway is open are frozen out of its walks, and the young generation is
# collected every GC_GEN0 allocations (measured in benches/test_gateway.py: see
# docs/performance.md).
GC_GEN0 = 10_000


def _freeze_startup_objects() -> None:
    gc.freeze()


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
    # Keys never leave: errors, stream events, logs (aiohttp's too) and metrics pass through
    # the one scrubber, which learns this config's secrets here.
    redact.configure(redact.config_secrets(config))
    redact.install_log_scrubbing()
    redact.install_http_error_scrubbing()
    app = web.Application(
        client_max_size=config.server.max_body_bytes,
        middlewares=[*(make(config) for make in MIDDLEWARES), make_middleware(config)],
        handler_args={"max_field_size": 16384},
    )
    app[lifecycle_key] = Lifecycle()
    app.on_shutdown.append(_start_draining)
    install_default_protocols(app)
    app.cleanup_ctx.append(_gateway_ctx(config, gateway, background_open, failed))
    # Outermost middleware and first to open, last to close: sees every API request.
    observability.install(app, config, CONTEXT)
    _add_routes(app, config)
    return app


def _add_routes(app: web.Application, config: Config) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", prometheus)
    app.router.add_get("/v1/models", list_models)
    add_chat_endpoint(app, "/v1/chat/completions", OPENAI_CHAT)
    add_chat_endpoint(app, "/chat/completions", OPENAI_CHAT)
    add_chat_endpoint(app, "/v1/messages", ANTHROPIC_MESSAGES)
    for path, protocol in CHAT_ENDPOINTS:
        add_chat_endpoint(app, path, protocol)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/embeddings", embeddings)
    responses_endpoints.setup(app, config)
    app.router.add_routes(admin_spend.routes)
    app.router.add_routes(admin_cache.routes)
    for routes in ROUTES:
        app.router.add_routes(routes)
    ui.setup(app)


async def _start_draining(app: web.Application) -> None:
    # Runs once the listener closed (SIGTERM): /readyz says so while requests finish.
    app[lifecycle_key].draining = True


def _gateway_ctx(
    config: Config, given: Gateway | None, background_open: bool, failed: list[str]
) -> Any:
    async def gateway_ctx(app: web.Application) -> AsyncIterator[None]:
        gw = given if given is not None else Gateway(config)
        for install in INSTALLERS:  # features attach their hooks before the gateway opens
            install(gw)
        app[gateway_key] = gw

        async def open_gateway() -> None:
            try:
                await gw.open()
                _freeze_startup_objects()  # serve only: tests open in the foreground
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

    return gateway_ctx


def run_app(
    config: Config,
    *,
    source: str,
    reuse_port: bool = False,
    discovery: Rediscovery | None = None,
) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency everywhere but Windows
        pass
    log.info("hybridfast: config from %s", source)
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0, gen1, gen2)
    failed: list[str] = []
    app = create_app(config, background_open=True, failed=failed)
    app[config_source_key] = source
    app.cleanup_ctx.append(sighup_ctx(source, lambda a: a[gateway_key]))
    app.cleanup_ctx.append(workers.metrics_socket_ctx(lambda: generate_latest(REGISTRY)))
    if discovery is not None:  # zero-config: local servers that start later join
        app.cleanup_ctx.append(rediscovery_ctx(discovery))
    web.run_app(
        app,
        host=config.server.host,
        port=config.server.port,
        access_log=None,
        print=lambda msg: log.info(msg.strip()),
        loop=asyncio.new_event_loop(),
        backlog=1024,
        # SIGTERM: stop listening, let requests and streams in flight finish for this long.
        shutdown_timeout=config.server.drain_timeout_s,
        reuse_port=reuse_port or None,
        # A client that hangs up cancels its request: it leaves a deployment's queue, its
        # upstream call is closed, and it is recorded as 499.
        handler_cancellation=True,
        ssl_context=tls.server_context(config.tls),
    )
    if failed:
        raise GatewayError(
            f"the gateway could not start: {failed[0]}",
            code="ERR_NOT_READY",
            hint="check the config section the message names",
        )
