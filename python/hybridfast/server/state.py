"""What the app and its handlers share: typed app keys and per-request keys.

Every server module reads them from here (not from `app.py`), so no endpoint module needs the
app factory and the app factory can import every endpoint module.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiohttp import web

from hybridfast.pipeline.context import RequestContext
from hybridfast.pipeline.gateway import Gateway
from hybridfast.protocols.base import ClientProtocol
from hybridfast.types import Caller

gateway_key = web.AppKey("gateway", Gateway)
# The Gateway opens (ledger, cache, router) in the background so /healthz answers at once;
# requests that need it wait for this task.
opening_key = web.AppKey("opening", asyncio.Task[None])
# The config file serve runs on ("<defaults>" without one): what SIGHUP and /admin/config edit.
config_source_key = web.AppKey("config_source", str)


@dataclass
class Lifecycle:
    """Set once SIGTERM arrived: the process stopped listening and finishes what is in flight."""

    draining: bool = False


lifecycle_key = web.AppKey("lifecycle", Lifecycle)
# Path prefixes and the client protocol whose error shape answers there (longest first).
error_protocols_key = web.AppKey("error_protocols", list[tuple[str, ClientProtocol]])

# Per request: its context (the error middleware turns it into headers) and who is calling.
CONTEXT = web.RequestKey("context", RequestContext)
CALLER = web.RequestKey("caller", Caller)
