"""Zero-config re-discovery in a running server: the watcher started by `serve` without a
config file applies what it finds through `Gateway.reconfigure`, once the gateway is open."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from hybridfast.config import Config
from hybridfast.discovery import FoundServer, Rediscovery
from hybridfast.server.state import gateway_key, opening_key


def rediscovery_ctx(watch: Rediscovery) -> Callable[[web.Application], AsyncIterator[None]]:
    """A `cleanup_ctx` that runs `watch` for the life of the app."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        async def reconfigure(config: Config, found: list[FoundServer]) -> None:
            # A server found while the gateway still opens waits for it (and a failed open
            # raises here: the watcher logs it and the process is stopping anyway).
            await asyncio.shield(app[opening_key])
            await app[gateway_key].reconfigure(config)

        watch.on_change = reconfigure
        watch.start()
        try:
            yield
        finally:
            await watch.stop()

    return ctx
