"""Plugins over HTTP: the callbacks run after every answer, and `GET /admin/plugins` lists
every installed plugin (each group), whether it loaded, each callback's calls and failures,
and the provider and cache-backend plugins the running config uses: whether each was built,
its calls, failures and last error (`hybridfast.experiments.plugins`)."""

from __future__ import annotations

import asyncio
import weakref

import orjson
from aiohttp import web

from hybridfast.cache import PluginCache
from hybridfast.config import Config
from hybridfast.experiments.plugins import CALLBACKS, CallbackHub, discover
from hybridfast.pipeline.gateway import Gateway
from hybridfast.providers import PluginProvider
from hybridfast.server.state import gateway_key

# One hub per gateway (the installer makes it; the admin page finds it through the app).
_HUBS: weakref.WeakKeyDictionary[Gateway, CallbackHub] = weakref.WeakKeyDictionary()


def install(gateway: Gateway) -> None:
    """Loads the installed callbacks now; they reload with the config."""
    hub = _HUBS[gateway] = CallbackHub(gateway)

    def follow(_config: Config) -> None:
        hub.refresh()
        # Attached only while a callback is loaded: with none, answers pay nothing for it.
        on = bool(hub.callbacks)
        gateway.hooks.switch("after_answer", hub.dispatch, on, name="plugins", order=100)

    follow(gateway.config)
    gateway.followers.add("plugin callbacks", follow)


routes = web.RouteTableDef()


@routes.get("/admin/plugins")
async def list_plugins(request: web.Request) -> web.Response:
    hub = _HUBS.get(request.app[gateway_key])
    others = [i for i in await asyncio.to_thread(discover) if i.group != CALLBACKS]
    gateway = request.app[gateway_key]
    cache = gateway.cache
    body = {
        "plugins": [vars(i) for i in others],
        "callbacks": hub.report() if hub is not None else [],
        "providers": [
            p.report() for p in gateway.providers.values() if isinstance(p, PluginProvider)
        ],
        "cache_backend": cache.stats()["plugin"] if isinstance(cache, PluginCache) else None,
    }
    return web.Response(body=orjson.dumps(body), content_type="application/json")
