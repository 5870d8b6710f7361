"""`serve`'s cyclic-collector settings: the young generation is collected every
`GC_GEN0` allocations, not every 700 (at 16 concurrent the default collector took ~7% of
the server's CPU and paused it for ~0.1 s at each full walk; benches/test_gateway.py)."""

from __future__ import annotations

import gc
from typing import Any

import pytest
from aiohttp import web

from hybridfast.config import parse_config
from hybridfast.server import app as server_app


def test_serve_collects_the_young_generation_less_often(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvloop

    ran: list[Any] = []

    def run(app: web.Application, **kw: Any) -> None:
        ran.append(app)
        kw["loop"].close()

    monkeypatch.setattr(web, "run_app", run)
    monkeypatch.setattr(uvloop, "install", lambda: None)  # keep this process's loop policy
    before = gc.get_threshold()
    try:
        config = parse_config("models: []\nledger: {backend: memory}\n").config
        server_app.run_app(config, source="test")
        assert ran, "run_app did not start the server"
        assert gc.get_threshold()[0] == server_app.GC_GEN0
        assert gc.get_threshold()[1:] == before[1:]
    finally:
        gc.set_threshold(*before)
