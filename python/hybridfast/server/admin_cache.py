"""Admin endpoints of the cache: invalidation and stats. The app factory mounts `routes` behind the
master key."""

from __future__ import annotations

from aiohttp import web

routes = web.RouteTableDef()
