"""`GET /v1/models/{id}` and `POST /v1/messages/count_tokens`.

`/v1/models/{id}` answers in the caller's own shape: Anthropic's (`type: model`,
`display_name`, `created_at`) for Anthropic clients — they send `anthropic-version`, or
`x-api-key` without a bearer token — and OpenAI's otherwise; an unknown id is a 404 in the
same shape.

`/v1/messages/count_tokens` counts a Messages request's prompt. When the model has an
Anthropic deployment, Anthropic's own count endpoint answers (exact); otherwise, or when that
call fails, the gateway's tokenizer estimates it and says so (`"estimated": true` in the body,
`x-hybridfast-tokens: estimated`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
from aiohttp import web

from hybridfast.embeddings import builtin_models
from hybridfast.errors import InvalidRequest, ModelNotFound
from hybridfast.pipeline.gateway import Gateway
from hybridfast.pricing import estimate_tokens
from hybridfast.protocols import anthropic as anthropic_protocol
from hybridfast.protocols import openai as openai_protocol
from hybridfast.protocols.common import read_json_object
from hybridfast.providers.anthropic import AnthropicProvider
from hybridfast.providers.base import ProviderError
from hybridfast.server.state import gateway_key
from hybridfast.types import Deployment

log = logging.getLogger("hybridfast.server")

_JSON = "application/json"
routes = web.RouteTableDef()
# When these answers say a model was "created": the gateway's start (it serves them since).
_STARTED = int(time.time())


def is_anthropic_client(headers: Mapping[str, str]) -> bool:
    if "anthropic-version" in headers:
        return True
    return "x-api-key" in headers and "Authorization" not in headers


def model_kinds(gateway: Gateway) -> dict[str, dict[str, Any]]:
    """Every name `/v1/models` lists, with what it is."""
    names: dict[str, dict[str, Any]] = {}
    for d in gateway.deployments:
        entry = names.setdefault(d.name, {"kind": "group", "deployments": []})
        entry["deployments"].append(d.id)
    for name, route in gateway.config.routes.items():
        names[name] = {
            "kind": "route",
            "strategy": route.strategy,
            "candidates": list(route.candidates),
        }
    for name in builtin_models(gateway.config):
        names.setdefault(name, {"kind": "builtin", "capabilities": ["embeddings"]})
    return names


def _created_at() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(_STARTED))


@routes.get("/v1/models/{model_id:.+}")
@routes.get("/models/{model_id:.+}")
async def retrieve_model(request: web.Request) -> web.Response:
    """GET /v1/models/{model_id}."""
    gateway = request.app[gateway_key]
    model_id = request.match_info["model_id"]
    anthropic = is_anthropic_client(request.headers)
    found = model_kinds(gateway).get(model_id)
    if found is None:
        err = ModelNotFound(f"the model {model_id!r} does not exist")
        protocol = anthropic_protocol if anthropic else openai_protocol
        return web.Response(status=404, body=protocol.error_body(err), content_type=_JSON)
    if anthropic:
        body: dict[str, Any] = {
            "type": "model",
            "id": model_id,
            "display_name": model_id,
            "created_at": _created_at(),
        }
    else:
        body = {
            "id": model_id,
            "object": "model",
            "created": _STARTED,
            "owned_by": "hybridfast",
            "x_hybridfast": found,
        }
    return web.Response(body=orjson.dumps(body), content_type=_JSON)


# --- count_tokens ----------------------------------------------------------------------


def deployments_of(gateway: Gateway, name: str, depth: int = 0) -> Iterator[Deployment]:
    """The deployments a name can reach: a group's, a deployment itself, a route's
    candidates (routes of routes too)."""
    for d in gateway.deployments:
        if d.name == name or d.id == name:
            yield d
    route = gateway.config.routes.get(name)
    if route is not None and depth < 8:
        for candidate in route.candidates:
            yield from deployments_of(gateway, candidate, depth + 1)


def _prompt_text(body: dict[str, Any]) -> str:
    """The text a tokenizer should count: system, every block's text and tool input, the
    tool definitions."""
    parts: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            kind = value.get("type")
            if kind in ("image", "document") and isinstance(value.get("source"), dict):
                return  # binary sources are not text; the exact count covers them
            for key in ("text", "content", "thinking"):
                walk(value.get(key))
            if "input" in value:
                parts.append(orjson.dumps(value["input"]).decode())

    walk(body.get("system"))
    walk(body.get("messages"))
    if body.get("tools"):
        parts.append(orjson.dumps(body["tools"]).decode())
    return "\n".join(parts)


def _check(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("`model` must be a non-empty string")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("`messages` must be a non-empty list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            raise InvalidRequest(f"messages[{i}] must be a user or assistant message")
    return model


@routes.post("/v1/messages/count_tokens")
async def count_tokens(request: web.Request) -> web.Response:
    """POST /v1/messages/count_tokens."""
    gateway = request.app[gateway_key]
    body = read_json_object(await request.read())
    model = _check(body)
    candidates = list(deployments_of(gateway, model))
    if not candidates:
        raise ModelNotFound(f"the model {model!r} does not exist")
    for dep in candidates:
        provider = gateway.providers.get(dep.provider)
        if isinstance(provider, AnthropicProvider):
            try:
                tokens = await provider.count_tokens(dep, body)
            except ProviderError as exc:
                if exc.client_fault:
                    raise InvalidRequest(exc.message, status=exc.status or 400) from None
                log.info("count_tokens on %s failed, estimating: %s", dep.id, exc.message)
                break
            return web.Response(
                body=orjson.dumps({"input_tokens": tokens}),
                content_type=_JSON,
                headers={"x-hybridfast-tokens": "exact", "x-hybridfast-deployment": dep.id},
            )
    dep = candidates[0]
    tokens = estimate_tokens(dep.kind, dep.model, _prompt_text(body))
    return web.Response(
        body=orjson.dumps({"input_tokens": tokens, "estimated": True}),
        content_type=_JSON,
        headers={"x-hybridfast-tokens": "estimated", "x-hybridfast-deployment": dep.id},
    )


__all__ = ["count_tokens", "is_anthropic_client", "retrieve_model", "routes"]
