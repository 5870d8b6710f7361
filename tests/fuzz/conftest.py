"""A gateway served over real HTTP on a background loop (with fake OpenAI and Anthropic
upstreams), so synchronous Hypothesis tests can send it thousands of bodies quickly."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from aiohttp import web

from hybridfast.config import parse_config
from hybridfast.server.app import create_app
from tests.conftest import fake_config
from tests.fakes import BackgroundLoop, FakeUpstream

MASTER_KEY = "fuzz-master-key-0123"
USER_KEY = "fuzz-user-key-4567"


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]


class Gateway:
    """One keep-alive connection to the served gateway."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._conn: http.client.HTTPConnection | None = None

    def send(
        self,
        path: str,
        body: bytes,
        headers: dict[str, str] | None = None,
        method: str = "POST",
    ) -> Answer:
        sent = {"Authorization": f"Bearer {USER_KEY}", "Content-Type": "application/json"}
        sent.update(headers or {})
        for attempt in range(2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                self._conn.request(method, path, body=body, headers=sent)
                resp = self._conn.getresponse()
                data = resp.read()
            except (ConnectionError, http.client.HTTPException):
                self._conn.close()
                self._conn = None
                if attempt:
                    raise
                continue
            if resp.getheader("connection", "").lower() == "close":
                self._conn.close()
                self._conn = None
            return Answer(resp.status, data, {k.lower(): v for k, v in resp.getheaders()})
        raise AssertionError("unreachable")


@pytest.fixture(scope="package")
def served() -> Iterator[Gateway]:
    loop = BackgroundLoop()
    fakes = [FakeUpstream("openai"), FakeUpstream("anthropic")]
    for fake in fakes:
        loop.run(fake.start())
    text = fake_config(
        *fakes,
        server=f"  master_key: {MASTER_KEY}",
        extra=f"keys:\n  - {{key: {USER_KEY}, name: fuzzer, team: fuzz}}\n",
    )
    config = parse_config(text).config
    runner = web.AppRunner(create_app(config), access_log=None)

    async def start() -> int:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        return int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    port = loop.run(start(), timeout=60)
    try:
        yield Gateway(port)
    finally:
        loop.run(runner.cleanup(), timeout=30)
        for fake in fakes:
            loop.run(fake.stop())
        loop.close()
