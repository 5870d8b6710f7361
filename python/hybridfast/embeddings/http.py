"""`POST /v1/embeddings`. (The embeddings issue fills this in.)"""

from __future__ import annotations

from aiohttp import web

from hybridfast.errors import ModelNotFound


async def handle_embeddings(request: web.Request) -> web.StreamResponse:
    raise ModelNotFound("no embedding model is configured")
