"""`GET /healthz` (the process answers), `GET /readyz` (the gateway opened), `GET /v1/models`,
`GET /metrics` (Prometheus)."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hybridfast.embeddings import builtin_models
from hybridfast.metrics import REGISTRY
from hybridfast.redact import scrub_bytes
from hybridfast.server.state import gateway_key, lifecycle_key, opening_key
from hybridfast.server.workers import all_workers_metrics

_JSON = "application/json"


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type=_JSON)


async def readyz(request: web.Request) -> web.Response:
    gateway = request.app.get(gateway_key)
    opening = request.app.get(opening_key)
    if gateway is None or opening is None or not opening.done():
        return web.Response(status=503, body=b'{"status":"starting"}', content_type=_JSON)
    if opening.cancelled() or opening.exception() is not None:
        return web.Response(status=503, body=b'{"status":"failed"}', content_type=_JSON)
    lifecycle = request.app.get(lifecycle_key)
    if lifecycle is not None and lifecycle.draining:
        return web.Response(status=503, body=b'{"status":"draining"}', content_type=_JSON)
    # Embeddings always have the built-in models; chat needs a deployment that is not
    # embedding-only. `?need=chat` is the probe for a load balancer sending chat traffic.
    chat = any("embeddings" not in d.capabilities for d in gateway.deployments)
    body: dict[str, Any] = {
        "status": "ready",
        "chat": chat,
        "embeddings": True,
        "deployments": len(gateway.deployments),
        "providers": sorted(gateway.providers),
    }
    if request.query.get("need") == "chat" and not chat:
        body["status"] = "no chat model"
        return web.Response(status=503, body=orjson.dumps(body), content_type=_JSON)
    if gateway.gpus.gpus:
        body["gpus"] = gateway.gpus.summary()
    health = getattr(gateway.router, "health", None)
    if callable(health):
        with contextlib.suppress(Exception):
            body["router"] = health()
    return web.Response(body=orjson.dumps(body, default=str), content_type=_JSON)


async def list_models(request: web.Request) -> web.Response:
    """GET /v1/models — groups, routes and deployments, in OpenAI's list shape."""
    gateway = request.app[gateway_key]
    groups: dict[str, list[str]] = {}
    for d in gateway.deployments:
        groups.setdefault(d.name, []).append(d.id)
    created = int(time.time())
    data: list[dict[str, Any]] = [
        {
            "id": name,
            "object": "model",
            "created": created,
            "owned_by": "hybridfast",
            "x_hybridfast": {"kind": "group", "deployments": ids},
        }
        for name, ids in groups.items()
    ]
    data += [
        {
            "id": name,
            "object": "model",
            "created": created,
            "owned_by": "hybridfast",
            "x_hybridfast": {
                "kind": "route",
                "strategy": route.strategy,
                "candidates": route.candidates,
            },
        }
        for name, route in gateway.config.routes.items()
    ]
    data += [
        {
            "id": name,
            "object": "model",
            "created": created,
            "owned_by": "hybridfast",
            "x_hybridfast": {"kind": "builtin", "capabilities": ["embeddings"]},
        }
        for name in builtin_models(gateway.config)
    ]
    return web.Response(body=orjson.dumps({"object": "list", "data": data}), content_type=_JSON)


async def prometheus(request: web.Request) -> web.Response:
    # Under `serve --workers N`: every worker's metrics, labelled by worker.
    # Label values are key names, teams, models: scrubbed in case one was given a key's value.
    body = scrub_bytes(await all_workers_metrics(generate_latest(REGISTRY)))
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
