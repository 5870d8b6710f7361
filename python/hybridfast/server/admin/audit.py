"""The audit log of admin actions outside the key store: every request that may change
something under `/admin` (POST, PUT, PATCH, DELETE: budgets, cache invalidation, config
apply, ...) is recorded with who sent it, what (method and path), when, the query and the
status it got, refused attempts included. Bodies are not recorded (they may hold secrets).
Key actions (`/admin/keys`) are recorded by the key store itself, with their settings.

`make(config)` is listed in `server.features.MIDDLEWARES`: it runs outside the error
middleware, so it sees the final status of every request, 401 and 403 included.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from hybridfast.config import Config
from hybridfast.security.keys_service import service_of
from hybridfast.server.state import CALLER, gateway_key

log = logging.getLogger("hybridfast.audit")
_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _audited(request: web.Request) -> bool:
    path = request.path
    return (
        request.method in _MUTATING
        and (path == "/admin" or path.startswith("/admin/"))
        and not path.startswith("/admin/keys")
    )


async def _record(request: web.Request, status: int) -> None:
    gateway = request.app.get(gateway_key)
    if gateway is None:
        return
    caller = request.get(CALLER)
    who = caller.key_name if caller is not None and caller.key_name else "unauthenticated"
    detail: dict[str, Any] = {"status": status, "query": dict(request.query)}
    try:
        store = await service_of(gateway).store()
        action = f"{request.method} {request.path}"
        await asyncio.to_thread(
            store.record, f"{who}@{request.remote or 'unknown'}", action, request.path, detail
        )
    except Exception:
        # The action itself happened; losing its audit line must not turn it into an error.
        log.exception("could not write the audit entry of %s %s", request.method, request.path)


def make(config: Config) -> Any:
    @web.middleware
    async def audit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not _audited(request):
            return await handler(request)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            await _record(request, exc.status)
            raise
        await _record(request, response.status)
        return response

    return audit
