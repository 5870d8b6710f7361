"""`POST /v1/embeddings`: OpenAI's embeddings API over every embedding deployment.

Input: a string, a list of strings, a token id list or a list of them; `dimensions`;
`encoding_format` `float` or `base64` (the official SDK asks for base64 by default: the
float32 bytes of each vector, little-endian). hybridfast extensions: `priority`
(`interactive`/`batch`, or the `x-hybridfast-priority` header) and `cache`
(`no-cache`/`no-store`, or the `Cache-Control` header).
"""

from __future__ import annotations

import base64
import uuid
import weakref
from typing import Any

import orjson
from aiohttp import web

from hybridfast._core import format_usd
from hybridfast.embeddings.pipeline import (
    EmbeddingResult,
    EmbeddingsService,
    parse_request,
    service_for,
)
from hybridfast.errors import InvalidRequest
from hybridfast.types import Caller

# Apps served without a full gateway object (local models only): one service per app.
_app_services: weakref.WeakKeyDictionary[web.Application, EmbeddingsService] = (
    weakref.WeakKeyDictionary()
)


async def handle_embeddings(request: web.Request) -> web.StreamResponse:
    """Errors are raised as `GatewayError`s: the app's middleware renders them."""
    request_id = request.headers.get("x-hybridfast-request-id") or uuid.uuid4().hex
    service = _service(request.app)
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from None
    parsed = parse_request(
        body, service.settings, priority_header=request.headers.get("x-hybridfast-priority")
    )
    control = request.headers.get("Cache-Control", "").lower()
    if "no-store" in control:
        parsed.cache = "no-store"
    elif "no-cache" in control and parsed.cache == "default":
        parsed.cache = "no-cache"

    # aiohttp does not cancel a handler when its client disconnects: the batcher asks.
    def gone() -> bool:
        transport = request.transport
        return transport is None or transport.is_closing()

    result = await service.embed(parsed, _caller(request, parsed.user), request_id, gone=gone)
    return web.Response(
        body=encode_response(result, base64_format=body.get("encoding_format") == "base64"),
        content_type="application/json",
        headers={
            "x-hybridfast-request-id": request_id,
            "x-hybridfast-deployment": result.deployment.id,
            "x-hybridfast-cost-usd": format_usd(result.cost),
            "x-hybridfast-cache": result.cache_status,
            "x-hybridfast-cache-hits": str(result.cached),
        },
    )


def encode_response(result: EmbeddingResult, *, base64_format: bool) -> bytes:
    """The OpenAI response body; vectors go to orjson as NumPy rows (no Python floats)."""
    vectors = result.vectors
    data: list[dict[str, Any]]
    if base64_format:
        little = vectors.astype("<f4", copy=False)
        data = [
            {"object": "embedding", "index": i, "embedding": base64.b64encode(row).decode()}
            for i, row in enumerate(little)
        ]
    else:
        data = [
            {"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(vectors)
        ]
    return orjson.dumps(
        {
            "object": "list",
            "data": data,
            "model": result.model,
            "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def _service(app: web.Application) -> EmbeddingsService:
    try:
        from hybridfast.server.app import gateway_key
    except ImportError:  # pragma: no cover - an app without the gateway
        gateway = None
    else:
        gateway = app.get(gateway_key)
    if gateway is not None:
        return service_for(gateway)
    service = _app_services.get(app)
    if service is None:
        service = standalone_service(app)
        _app_services[app] = service
    return service


def standalone_service(app: web.Application) -> EmbeddingsService:
    """A service from the app's config alone: config order routing, no ledger, no providers
    (enough for the built-in local models)."""
    from hybridfast.deployments import build_deployments
    from hybridfast.routing import build_router
    from hybridfast.server.app import config_key

    config = app[config_key]
    return EmbeddingsService(config, router=build_router(config, build_deployments(config)))


def _caller(request: web.Request, user: str | None) -> Caller:
    from hybridfast.server.app import CALLER  # set by the app's auth middleware

    found = request.get(CALLER)
    caller = found if isinstance(found, Caller) else Caller()
    if user and caller.user is None:
        caller = Caller(key_name=caller.key_name, user=user, team=caller.team, tags=caller.tags)
    return caller
