"""The OpenAI Responses API endpoints: `POST /v1/responses`, `GET` and `DELETE
/v1/responses/{id}`, `GET /v1/responses/{id}/input_items`.

A Responses request runs through the same pipeline as chat (router, cache, budgets, ledger):
the protocol adapter (`hybridfast.protocols.responses`) turns it into the gateway's request
and the answer back. What is Responses-only lives here: stored responses (`store`, on by
default as in OpenAI's API) and `previous_response_id`, which continues a stored
conversation. Stored responses belong to the key that made them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web

from hybridfast._core import HybridfastError
from hybridfast.config import Config
from hybridfast.errors import GatewayError, InvalidRequest, to_gateway_error
from hybridfast.passthrough import attach
from hybridfast.pipeline.context import RequestContext
from hybridfast.pipeline.gateway import Gateway
from hybridfast.protocols import responses as protocol
from hybridfast.redact import scrub_bytes
from hybridfast.responses_store import LazyResponses, ResponsesStore, StoredResponse
from hybridfast.server.auth import caller_for
from hybridfast.server.chat import EventStream
from hybridfast.server.state import CONTEXT, gateway_key

log = logging.getLogger("hybridfast.server")

store_key = web.AppKey("responses_store", ResponsesStore)
_JSON = "application/json"


class ResponseNotFound(GatewayError):
    code, status = "ERR_RESPONSE_NOT_FOUND", 404
    hint = (
        "stored responses are kept for responses.retention_days, only when created with "
        "store: true, and only for the API key that created them"
    )


class Endpoints:
    """The handlers (methods, so the app factory mounts them with the store it opens)."""

    # --- create --------------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.StreamResponse:
        """POST /v1/responses."""
        gateway = request.app[gateway_key]
        ctx = RequestContext(endpoint="responses")
        request[CONTEXT] = ctx
        parsed = protocol.parse_request(await request.read(), request.headers)
        ctx.route = parsed.model
        ctx.stream = parsed.stream
        ctx.caller = caller_for(request, parsed.chat.user)
        owner = ctx.caller.key_name or ""
        store = request.app[store_key]
        history: list[dict[str, Any]] = []
        if parsed.previous_response_id is not None:
            previous = await store.get(parsed.previous_response_id, owner)
            if previous is None:
                raise ResponseNotFound(
                    f"previous_response_id {parsed.previous_response_id!r} was not found",
                    status=400,
                )
            history = previous.conversation
        chat = parsed.to_chat(history)
        if not history:
            # A Responses upstream gets the client's own body (a continuation is rebuilt from
            # the gateway's store, so it is translated).
            attach(chat, "responses", parsed.body)
        if not parsed.stream:
            answer = await gateway.complete(chat, ctx)
            obj = protocol.answer_object(parsed, answer, ctx.meta())
            if parsed.store:
                await self._keep(store, parsed, owner, obj, parsed.conversation(history, answer))
            return web.Response(body=orjson.dumps(obj), content_type=_JSON, headers=_headers(ctx))
        return await self._stream(request, gateway, parsed, ctx, history)

    async def _stream(
        self,
        request: web.Request,
        gateway: Gateway,
        parsed: protocol.ResponsesRequest,
        ctx: RequestContext,
        history: list[dict[str, Any]],
    ) -> web.StreamResponse:
        events = gateway.stream_events(parsed.chat, ctx)
        try:
            first = await anext(events)  # errors before the first byte become an error answer
            model = ctx.deployment.model if ctx.deployment is not None else parsed.model
            encoder = protocol.StreamEncoder(parsed, model)
            cost_known = ctx.cache != "miss" and ctx.cache != "bypass"
            response = EventStream(headers=_headers(ctx, cost_known))
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
                if not isinstance(exc, GatewayError | HybridfastError):
                    log.exception("request %s: the stream failed", ctx.request_id)
                error = ctx.error if ctx.error is not None else to_gateway_error(exc)
                ctx.status = error.status
                # Through the one scrubber: an upstream's mid-stream error may quote a key.
                await response.write_eof(scrub_bytes(encoder.error(error)))
                return response
            await response.write_eof(encoder.end(ctx.usage, ctx.meta()))
            if parsed.store:
                obj = encoder.final_object(ctx.usage, ctx.meta())
                answer = protocol.answer_from_output(encoder.output, encoder.finish)
                owner = ctx.caller.key_name or ""
                store = request.app[store_key]
                await self._keep(store, parsed, owner, obj, parsed.conversation(history, answer))
            return response
        finally:
            await events.aclose()

    async def _keep(
        self,
        store: ResponsesStore,
        parsed: protocol.ResponsesRequest,
        owner: str,
        obj: dict[str, Any],
        conversation: list[dict[str, Any]],
    ) -> None:
        items = [
            item if "id" in item else {"id": f"msg_{secrets.token_hex(24)}", **item}
            for item in parsed.input_items
            if isinstance(item, dict)
        ]
        kept = {k: v for k, v in obj.items() if k != "x_hybridfast"}
        try:
            await store.put(
                StoredResponse(
                    id=parsed.id,
                    owner=owner,
                    created_at=float(parsed.created_at),
                    response=kept,
                    input_items=items,
                    conversation=conversation,
                )
            )
        except Exception:
            # The client has its answer; a store failure must not turn it into an error.
            log.exception("could not store response %s", parsed.id)

    # --- read and delete -----------------------------------------------------------------

    async def _find(self, request: web.Request) -> StoredResponse:
        response_id = request.match_info["response_id"]
        caller = caller_for(request, None)
        found = await request.app[store_key].get(response_id, caller.key_name or "")
        if found is None:
            raise ResponseNotFound(f"no stored response {response_id!r}")
        return found

    async def retrieve(self, request: web.Request) -> web.Response:
        """GET /v1/responses/{id}."""
        found = await self._find(request)
        return web.Response(body=orjson.dumps(found.response), content_type=_JSON)

    async def input_items(self, request: web.Request) -> web.Response:
        """GET /v1/responses/{id}/input_items (newest first unless `order=asc`)."""
        found = await self._find(request)
        order = request.query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise InvalidRequest("`order` must be asc or desc")
        items = list(found.input_items)
        if order == "desc":
            items.reverse()
        body = {
            "object": "list",
            "data": items,
            "first_id": items[0]["id"] if items else None,
            "last_id": items[-1]["id"] if items else None,
            "has_more": False,
        }
        return web.Response(body=orjson.dumps(body), content_type=_JSON)

    async def delete(self, request: web.Request) -> web.Response:
        """DELETE /v1/responses/{id}."""
        response_id = request.match_info["response_id"]
        caller = caller_for(request, None)
        if not await request.app[store_key].delete(response_id, caller.key_name or ""):
            raise ResponseNotFound(f"no stored response {response_id!r}")
        body = {"id": response_id, "object": "response", "deleted": True}
        return web.Response(body=orjson.dumps(body), content_type=_JSON)


def _headers(ctx: RequestContext, cost_known: bool = True) -> dict[str, str]:
    return ctx.headers(cost_known=cost_known)


def setup(app: web.Application, config: Config) -> None:
    """Adds the endpoints and opens the response store with the app."""

    async def store_ctx(app: web.Application) -> AsyncIterator[None]:
        store = LazyResponses(config)
        app[store_key] = store
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                await store.close()

    app.cleanup_ctx.append(store_ctx)
    endpoints = Endpoints()
    for prefix in ("/v1", ""):
        app.router.add_post(f"{prefix}/responses", endpoints.create)
        app.router.add_get(f"{prefix}/responses/{{response_id}}", endpoints.retrieve)
        app.router.add_delete(f"{prefix}/responses/{{response_id}}", endpoints.delete)
        app.router.add_get(f"{prefix}/responses/{{response_id}}/input_items", endpoints.input_items)


__all__ = ["Endpoints", "ResponseNotFound", "setup", "store_key"]
