"""`GET /admin/deployments`: every deployment with its live state (circuit, latency and TTFT
moving averages, error rate, in-flight and queued requests), capabilities and price, and the
GPUs NVML sees — what the dashboard's Deployments page shows."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from hybridfast._core import format_usd
from hybridfast.server.state import gateway_key
from hybridfast.types import Deployment

routes = web.RouteTableDef()


def _per_mtok(picos_per_token: int) -> str:
    return format_usd(picos_per_token * 1_000_000)


def _row(d: Deployment, stats: dict[str, Any], queued: int) -> dict[str, Any]:
    return {
        "id": d.id,
        "name": d.name,
        "provider": d.provider,
        "kind": d.kind,
        "model": d.model,
        "local": d.local,
        "quality": d.quality,
        "capabilities": sorted(d.capabilities),
        "max_concurrency": d.max_concurrency,
        "price": f"${_per_mtok(d.price.input)} / ${_per_mtok(d.price.output)}",
        "queued": queued,
        **stats,
    }


@routes.get("/admin/deployments")
async def deployments(request: web.Request) -> web.Response:
    gateway = request.app[gateway_key]
    # Native routers report live state; a router that does not, reports none.
    all_stats = getattr(gateway.router, "all_stats", None)
    stats: dict[str, dict[str, Any]] = all_stats() if all_stats is not None else {}
    admission = getattr(gateway, "admission", None)
    rows = [
        _row(d, stats.get(d.id, {}), admission.load(d.id)[1] if admission else 0)
        for d in gateway.deployments
    ]
    pool = getattr(gateway, "gpus", None)
    body = {"deployments": rows, "gpus": pool.summary() if pool is not None else []}
    return web.Response(body=orjson.dumps(body), content_type="application/json")
