"""Chat endpoints: one handler for every chat-like client protocol.

`serve_chat` reads a request through the protocol adapter, runs it through the pipeline and
writes the answer — a JSON body, or server-sent events as the upstream's bytes arrive — in
the same protocol. Errors before the first byte become an error answer (the middleware
renders it); errors after it become the protocol's error event.

    add_chat_endpoint(app, "/v1/completions", COMPLETIONS)   # any ClientProtocol
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from hybridfast.errors import to_gateway_error
from hybridfast.pipeline.admission import parse_priority
from hybridfast.pipeline.context import RequestContext
from hybridfast.protocols.base import ClientProtocol
from hybridfast.redact import scrub_bytes
from hybridfast.server.auth import caller_for, note_client_request_id
from hybridfast.server.middleware import use_protocol
from hybridfast.server.state import CONTEXT, gateway_key
from hybridfast.types import ChatRequest

log = logging.getLogger("hybridfast.server")

_JSON = "application/json"


class EventStream(web.StreamResponse):
    """A server-sent-events answer whose head leaves with its first events, in one send:
    `prepare` is always followed at once by the first write here. (aiohttp sends a
    StreamResponse's head on its own unless the class opts into buffering it, as its
    `Response` does; a name aiohttp dropped would only cost the send saved.)"""

    _send_headers_immediately = False


def add_chat_endpoint(app: web.Application, path: str, protocol: ClientProtocol) -> None:
    """Serves `POST path` with `protocol`, and renders errors there in its shape."""
    app.router.add_post(path, chat_handler(protocol))
    use_protocol(app, path, protocol)


def chat_handler(
    protocol: ClientProtocol,
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await serve_chat(request, protocol)

    handle.__name__ = f"chat_{protocol.name}"
    return handle


async def serve_chat(
    request: web.Request,
    protocol: ClientProtocol,
    chat: ChatRequest | None = None,
    ctx: RequestContext | None = None,
) -> web.StreamResponse:
    """The whole exchange; `chat` (already parsed) and `ctx` may be given by a handler that
    needs them first (stored state, say)."""
    if ctx is None:
        ctx = RequestContext()
    request[CONTEXT] = ctx
    note_client_request_id(request, ctx)
    if chat is None:
        chat = protocol.parse_request(await request.read(), request.headers)
    ctx.route = chat.model
    ctx.stream = chat.stream
    ctx.caller = caller_for(request, chat.user)
    # interactive (0) .. batch (9): the order in which requests wait at a busy deployment.
    priority = request.headers.get("x-hybridfast-priority")
    if priority is not None:
        ctx.state["priority"] = parse_priority(
            priority, request.app[gateway_key].config.queue.default_priority
        )
    gateway = request.app[gateway_key]
    if not chat.stream:
        answer = await gateway.complete(chat, ctx)
        body = protocol.encode_answer(answer, ctx)
        return web.Response(body=body, content_type=_JSON, headers=ctx.headers())
    return await _stream(request, protocol, chat, ctx)


async def _stream(
    request: web.Request, protocol: ClientProtocol, chat: ChatRequest, ctx: RequestContext
) -> web.StreamResponse:
    events = request.app[gateway_key].stream_events(chat, ctx)
    try:
        first = await anext(events)  # errors before the first byte become an error answer
        encoder = protocol.stream_encoder(chat, ctx)
        # The exact cost of a miss is known only at the end: it comes in the last event.
        response = EventStream(
            headers=ctx.headers(cost_known=ctx.cache != "miss" and ctx.cache != "bypass")
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
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as exc:
            # The status line went out already: the error travels as the protocol's event,
            # and the context (the ledger line) has the status it carries.
            error = ctx.error if ctx.error is not None else to_gateway_error(exc)
            ctx.status = error.status
            # Through the one scrubber: an upstream's mid-stream error may quote a key.
            await response.write_eof(scrub_bytes(encoder.error(error)))
            return response
        # The last event and the end of the chunked body in one write: one send (and one
        # wake-up of the client) fewer per stream.
        await response.write_eof(encoder.end(ctx))
        return response
    finally:
        await events.aclose()
