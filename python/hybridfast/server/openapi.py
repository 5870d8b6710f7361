"""`GET /openapi.json`: the served API as an OpenAPI 3.1 document, generated from the edge
schemas (`hybridfast.validation`), so it lists exactly what the gateway checks."""

from __future__ import annotations

import orjson
from aiohttp import web

from hybridfast._core import __version__
from hybridfast.validation import document

routes = web.RouteTableDef()
_cached: list[bytes] = []


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    if not _cached:
        _cached.append(orjson.dumps(document(__version__)))
    return web.Response(body=_cached[0], content_type="application/json")
