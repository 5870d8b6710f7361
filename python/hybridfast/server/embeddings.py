"""`POST /v1/embeddings`: OpenAI's embeddings API over every embedding deployment.

Input: a string, a list of strings, a token id list or a list of them; `dimensions`;
`encoding_format` `float` or `base64`. hybridfast extensions: `priority`
(`interactive`/`batch`, or the `x-hybridfast-priority` header) and `cache`
(`no-cache`/`no-store`, or the `Cache-Control` header). The request runs through the same
pipeline as chat (`hybridfast.pipeline.embeddings`).
"""

from __future__ import annotations

from aiohttp import web

from hybridfast.embeddings.pipeline import parse_request
from hybridfast.pipeline.context import RequestContext
from hybridfast.protocols.common import read_json_object
from hybridfast.protocols.embeddings import encode_response
from hybridfast.server.auth import caller_for, note_client_request_id
from hybridfast.server.middleware import VALIDATED_BODY
from hybridfast.server.state import CONTEXT, gateway_key


async def embeddings(request: web.Request) -> web.StreamResponse:
    """Errors are raised as `GatewayError`s: the app's middleware renders them."""
    gateway = request.app[gateway_key]
    ctx = RequestContext(endpoint="embeddings")
    request[CONTEXT] = ctx
    note_client_request_id(request, ctx)
    # Checked at the edge already (the auth middleware); read here when served without it.
    body = request.get(VALIDATED_BODY) or read_json_object(await request.read())
    parsed = parse_request(
        body,
        gateway.config.embeddings,
        priority_header=request.headers.get("x-hybridfast-priority"),
    )
    control = request.headers.get("Cache-Control", "").lower()
    if "no-store" in control:
        parsed.cache = "no-store"
    elif "no-cache" in control and parsed.cache == "default":
        parsed.cache = "no-cache"
    ctx.route = parsed.model
    ctx.caller = caller_for(request, parsed.user)

    # aiohttp does not cancel a handler when its client disconnects: the batcher asks.
    def gone() -> bool:
        transport = request.transport
        return transport is None or transport.is_closing()

    result = await gateway.embed_request(parsed, ctx, gone=gone)
    headers = ctx.headers()  # x-hybridfast-cache: what the pipeline logged too
    headers["x-hybridfast-cache-hits"] = str(result.cached)
    return web.Response(
        body=encode_response(result, base64_format=body.get("encoding_format") == "base64"),
        content_type="application/json",
        headers=headers,
    )
