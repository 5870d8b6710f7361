"""Admin endpoints of the cache (mounted behind the master key by the app factory).

- `GET /admin/cache`: stats (lookups by result, entries, evictions, embedder, threshold).
- `GET /admin/cache/entries?limit=N`: the most recently used exact entries, with the key
  to invalidate each by.
- `DELETE /admin/cache`: drop everything.
- `DELETE /admin/cache/entries/{key}`: drop one entry (exact and its semantic twin).
- `POST /admin/cache/invalidate` with `{"all": true}`, `{"key": "<hex>"}`, or any of
  `{"model": ..., "team": ..., "key_name": ..., "tenant": ...}`: drop a scope.

Each answers `{"invalidated": n}` (or the stats) as JSON.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from aiohttp import web

from hybridfast.errors import GatewayError, InvalidRequest
from hybridfast.server.state import gateway_key

routes = web.RouteTableDef()

_HEX_KEY = re.compile(r"^[0-9a-f]{32}$")


def _cache(request: web.Request) -> Any:
    cache = request.app[gateway_key].cache
    if not hasattr(cache, "invalidate"):
        raise GatewayError(
            "this gateway's cache has no admin operations",
            code="ERR_NOT_SUPPORTED",
            status=501,
        )
    return cache


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _key(text: str) -> bytes:
    if not isinstance(text, str) or not _HEX_KEY.match(text):
        raise InvalidRequest("`key` must be the 32 hex digits GET /admin/cache/entries shows")
    return bytes.fromhex(text)


@routes.get("/admin/cache")
async def cache_stats(request: web.Request) -> web.Response:
    return _json(_cache(request).stats())


@routes.get("/admin/cache/entries")
async def cache_entries(request: web.Request) -> web.Response:
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        raise InvalidRequest("`limit` must be an integer") from None
    if not 1 <= limit <= 10_000:
        raise InvalidRequest("`limit` must be between 1 and 10000")
    return _json({"entries": _cache(request).entries(limit)})


@routes.delete("/admin/cache")
async def cache_clear(request: web.Request) -> web.Response:
    return _json({"invalidated": await _cache(request).invalidate(everything=True)})


@routes.delete("/admin/cache/entries/{key}")
async def cache_delete_key(request: web.Request) -> web.Response:
    key = _key(request.match_info["key"])
    return _json({"invalidated": await _cache(request).invalidate(key=key)})


def tenant_from(body: dict[str, Any]) -> str | None:
    """The tenant string entries are filed under (`team:<name>` or `key:<name>`)."""
    if body.get("team") is not None:
        return f"team:{body['team']}"
    if body.get("key_name") is not None:
        return f"key:{body['key_name']}"
    tenant = body.get("tenant")
    return None if tenant is None else str(tenant)


@routes.post("/admin/cache/invalidate")
async def cache_invalidate(request: web.Request) -> web.Response:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise InvalidRequest("the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    unknown = set(body) - {"all", "key", "model", "team", "key_name", "tenant"}
    if unknown:
        raise InvalidRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
    cache = _cache(request)
    if body.get("all") is True:
        n = await cache.invalidate(everything=True)
    elif "key" in body:
        n = await cache.invalidate(key=_key(body["key"]))
    else:
        model = body.get("model")
        tenant = tenant_from(body)
        if model is None and tenant is None:
            raise InvalidRequest(
                "say what to invalidate: all, key, model, team, key_name or tenant"
            )
        if model is not None and not isinstance(model, str):
            raise InvalidRequest("`model` must be a string")
        n = await cache.invalidate(model=model, tenant=tenant)
    return _json({"invalidated": n})
