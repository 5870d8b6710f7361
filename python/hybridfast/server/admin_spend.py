"""Admin endpoints of the ledger: GET /admin/spend, GET/PUT /admin/budgets.

The app factory mounts `routes` behind the master key."""

from __future__ import annotations

from aiohttp import web

routes = web.RouteTableDef()
