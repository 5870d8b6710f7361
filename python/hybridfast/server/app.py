"""The aiohttp application factory."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from hybridfast.config import Config

log = logging.getLogger("hybridfast.server")

config_key = web.AppKey("config", Config)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_app(config: Config) -> web.Application:
    app = web.Application(client_max_size=config.server.max_body_bytes)
    app[config_key] = config
    app.router.add_get("/healthz", healthz)
    return app


def run_app(config: Config, *, source: str) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency everywhere but Windows
        pass
    log.info("hybridfast: config from %s", source)
    web.run_app(
        create_app(config),
        host=config.server.host,
        port=config.server.port,
        access_log=None,
        print=lambda msg: log.info(msg.strip()),
        loop=asyncio.new_event_loop(),
    )
