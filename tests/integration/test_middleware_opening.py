"""Requests that arrive while the gateway is still opening in the background wait for it
and are answered; once it is open the middleware does not wait at all."""

from __future__ import annotations

import asyncio
from typing import Any

from hybridfast.config import parse_config
from hybridfast.pipeline.gateway import Gateway
from hybridfast.server.app import create_app
from hybridfast.server.state import opening_key
from tests.conftest import fake_config
from tests.fakes import FakeUpstream

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "Say something short."}]}


class SlowGateway(Gateway):
    async def open(self) -> None:
        await asyncio.sleep(0.3)
        await super().open()


async def test_a_request_during_a_background_open_waits_for_it(
    aiohttp_client: Any, fake_openai: FakeUpstream
) -> None:
    config = parse_config(fake_config(fake_openai)).config
    app = create_app(config, gateway=SlowGateway(config), background_open=True)
    client = await aiohttp_client(app)
    assert not app[opening_key].done()
    resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status == 200
    assert app[opening_key].done()
    resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status == 200
