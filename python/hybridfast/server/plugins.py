"""Plugins over HTTP: the callbacks run after every answer, and `GET /admin/plugins` lists
every installed plugin (each group), whether it loaded, and each callback's calls and
failures (`hybridfast.experiments.plugins`)."""

from __future__ import annotations

import asyncio
import weakref

import orjson
from aiohttp import web

from hybridfast.experiments.plugins import CALLBACKS, CallbackHub, discover
from hybridfast.pipeline.gateway import Gateway
from hybridfast.server.state import gateway_key

# One hub per gateway (the installer makes it; the admin page finds it through the app).
_HUBS: weakref.WeakKeyDictionary[Gateway, CallbackHub] = weakref.WeakKeyDictionary()


def install(gateway: Gateway) -> None:
    """Loads the installed callbacks now; they reload with the config."""
    hub = _HUBS[gateway] = CallbackHub(gateway)
    hub.refresh()
    gateway.hooks.add("after_answer", hub.dispatch, name="plugins", order=100)


routes = web.RouteTableDef()


@routes.get("/admin/plugins")
async def list_plugins(request: web.Request) -> web.Response:
    hub = _HUBS.get(request.app[gateway_key])
    others = [i for i in await asyncio.to_thread(discover) if i.group != CALLBACKS]
    body = {
        "plugins": [vars(i) for i in others],
        "callbacks": hub.report() if hub is not None else [],
    }
    return web.Response(body=orjson.dumps(body), content_type="application/json")
