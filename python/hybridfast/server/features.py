"""The features the server switches on: one line each, so features attach without editing
the pipeline or the app factory.

- `INSTALLERS`: functions `install(gateway) -> None` called once per app, before the gateway
  opens. They register hooks on `gateway.hooks` (see `hybridfast.pipeline.hooks`) and read
  their settings from `gateway.config`. An installer that has nothing to do (its feature is
  off in config) returns without registering anything.
- `ROUTES`: `aiohttp.web.RouteTableDef`s of extra endpoints (admin pages, feedback, ...). They
  sit behind the app's auth and error middleware; `/admin/...` paths need the master key.
- `MIDDLEWARES`: factories `make(config) -> aiohttp middleware`, outermost first; they run
  outside the error middleware (they see every request, edge errors included).
- `CHAT_ENDPOINTS`: `(path, protocol)` pairs: a chat-like API served by the one chat handler
  through a `ClientProtocol` adapter (`hybridfast.protocols.base`).

Keep each tuple sorted by module name: several people add lines at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from hybridfast.config import Config
from hybridfast.experiments import chains as prompt_chains
from hybridfast.experiments import learned_hooks as learned_router
from hybridfast.observability import hooks as observability_hooks
from hybridfast.pipeline.gateway import Gateway
from hybridfast.protocols.base import ClientProtocol
from hybridfast.protocols.completions import COMPLETIONS
from hybridfast.security import guardrails_hooks, keys_service, ratelimit_hooks
from hybridfast.server import feedback, model_endpoints, openapi
from hybridfast.server import plugins as plugin_hooks
from hybridfast.server.admin import audit as admin_audit
from hybridfast.server.admin import config as admin_config
from hybridfast.server.admin import deployments as admin_deployments
from hybridfast.server.admin import keys as admin_keys

INSTALLERS: tuple[Callable[[Gateway], None], ...] = (
    observability_hooks.install,
    feedback.install,
    prompt_chains.install,
    plugin_hooks.install,
    learned_router.install,
    guardrails_hooks.install,
    keys_service.install,
    ratelimit_hooks.install,
)
ROUTES: tuple[web.RouteTableDef, ...] = (
    admin_config.routes,
    admin_deployments.routes,
    admin_keys.routes,
    feedback.routes,
    model_endpoints.routes,
    openapi.routes,
    plugin_hooks.routes,
)
MIDDLEWARES: tuple[Callable[[Config], Any], ...] = (admin_audit.make,)
CHAT_ENDPOINTS: tuple[tuple[str, ClientProtocol], ...] = (
    ("/v1/completions", COMPLETIONS),
    ("/completions", COMPLETIONS),
)
