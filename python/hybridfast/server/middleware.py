"""The one gateway middleware: waits for the gateway to open, authenticates, and turns every
error into the client protocol's own error shape with a stable code (and the request's
`x-hybridfast-*` headers). Handlers raise `GatewayError`s and read top to bottom."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from hybridfast.config import Config
from hybridfast.errors import GatewayError, RequestTooLarge, Unauthorized, to_gateway_error
from hybridfast.protocols.anthropic import ANTHROPIC_MESSAGES
from hybridfast.protocols.base import ClientProtocol
from hybridfast.protocols.openai import OPENAI_CHAT
from hybridfast.redact import scrub_bytes
from hybridfast.security.keys_service import resolve_runtime_key
from hybridfast.server.auth import IDENTITY, callers_by_key, presented_key
from hybridfast.server.state import (
    CALLER,
    CONTEXT,
    error_protocols_key,
    gateway_key,
    opening_key,
)
from hybridfast.server.ui import dashboard_session
from hybridfast.types import Caller
from hybridfast.validation import SCHEMAS, check_depth, validated_body
from hybridfast.validation.edge import Access, IdentityPolicy, forbidden

log = logging.getLogger("hybridfast.server")

OPEN_PATHS = frozenset({"/healthz", "/readyz"})
# The body of a request whose endpoint has an edge schema, decoded and checked.
VALIDATED_BODY = web.RequestKey("validated_body", dict)
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
_JSON = "application/json"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def use_protocol(app: web.Application, prefix: str, protocol: ClientProtocol) -> None:
    """Errors on paths starting with `prefix` are rendered in `protocol`'s shape."""
    table = app.setdefault(error_protocols_key, [])
    table.append((prefix, protocol))
    table.sort(key=lambda entry: len(entry[0]), reverse=True)


def protocol_for(request: web.Request) -> ClientProtocol:
    for prefix, protocol in request.app.get(error_protocols_key, ()):
        if request.path.startswith(prefix):
            return protocol
    # Paths both APIs share (/v1/models...) or none has: the SDK says which one is calling.
    if "anthropic-version" in request.headers:
        return ANTHROPIC_MESSAGES
    return OPENAI_CHAT


def install_default_protocols(app: web.Application) -> None:
    use_protocol(app, "/v1/messages", ANTHROPIC_MESSAGES)


def error_response(request: web.Request, err: GatewayError) -> web.Response:
    ctx = request.get(CONTEXT)
    headers = dict(err.headers)
    if ctx is not None:
        ctx.status = err.status
        headers.update(ctx.headers())
    return web.Response(
        status=err.status,
        # Through the one scrubber: an upstream's message may quote a key.
        body=scrub_bytes(protocol_for(request).encode_error(err)),
        content_type=_JSON,
        headers=headers,
    )


def http_error(exc: web.HTTPException) -> GatewayError:
    if exc.status == 413:
        return RequestTooLarge(exc.text or "the request body is too large")
    if exc.status == 404:
        return GatewayError(
            "no such endpoint", code="ERR_NOT_FOUND", status=404, hint="see GET /v1/models"
        )
    if exc.status == 405:
        return GatewayError("method not allowed", code="ERR_METHOD_NOT_ALLOWED", status=405)
    return GatewayError(exc.reason, code="ERR_HTTP", status=exc.status)


async def _wait_until_open(opening: asyncio.Future[None]) -> None:
    """Waits for a gateway still opening (only the first requests after start wait)."""
    if not opening.done():
        await asyncio.shield(opening)
    if opening.exception() is not None:
        raise GatewayError(
            "the gateway failed to start",
            code="ERR_NOT_READY",
            status=503,
            hint="the gateway log says why",
        )


class _Auth:
    """Who may call what, as one config says: its keys, the master key, admin and metrics
    access, whose end users a body may name."""

    __slots__ = ("access", "callers", "identity", "need_auth")

    def __init__(self, config: Config) -> None:
        self.callers = callers_by_key(config)
        self.need_auth = bool(self.callers)
        self.access = Access.from_config(config)
        self.identity = IdentityPolicy.from_config(config)

    async def admit(self, request: web.Request) -> None:
        """Sets the request's caller and identity policy, or raises 401/403."""
        if request.path.startswith("/admin") and dashboard_session(request):
            request[CALLER] = Caller(key_name="master")
        elif self.access.check(request.path, key := presented_key(request), request.remote):
            # /admin and /metrics: decided by `access` (master / metrics key only).
            known = self.callers.get(key) if key else None
            if known is not None:
                request[CALLER] = known
        elif self.need_auth:
            caller = self.callers.get(key) if key else None
            if caller is None and key:  # a virtual key created at run time?
                caller = await resolve_runtime_key(request.app[gateway_key], key)
            if caller is None:
                raise Unauthorized("missing or unknown API key")
            if request.path.startswith("/admin"):  # a known key, not the master's
                raise forbidden(
                    "the admin API needs the master key",
                    "send server.master_key as the bearer token",
                )
            request[CALLER] = caller
        request[IDENTITY] = self.identity


async def _check_body(request: web.Request) -> None:
    # The edge check: a malformed body is a 400 before anything else runs (the schema where
    # the endpoint has one, the nesting limit everywhere).
    raw = await request.read()
    if request.path in SCHEMAS:
        request[VALIDATED_BODY] = validated_body(request.path, raw)
    elif raw:
        check_depth(raw)


def make_middleware(config: Config) -> Any:
    auth = _Auth(config)
    # The gateway's config as last seen: a reload (SIGHUP, POST /admin/config) swaps it, and
    # the keys it adds, removes or rotates count from the next request on.
    seen: Config | None = None

    @web.middleware
    async def gateway_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal auth, seen
        try:
            if request.path == "/ui" or request.path.startswith("/ui/"):
                # The dashboard's page and sign-in are public; its data comes from /admin.
                return await handler(request)
            if request.path not in OPEN_PATHS:
                opening = request.app[opening_key]
                if not opening.done() or opening.exception() is not None:
                    await _wait_until_open(opening)  # not on the path of an open gateway
                live = request.app[gateway_key].config
                if live is not seen:
                    if seen is not None:
                        auth = _Auth(live)
                    seen = live
                await auth.admit(request)
                if request.method in _WITH_BODY:
                    await _check_body(request)
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error_response(request, http_error(exc))
        except ConnectionResetError:
            return web.Response(status=499)  # the client went away; nobody is left to answer
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not isinstance(exc, GatewayError) and not hasattr(exc, "code"):
                log.exception("unhandled error on %s %s", request.method, request.path)
            return error_response(request, to_gateway_error(exc))

    return gateway_middleware
