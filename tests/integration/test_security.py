"""Hardening over the HTTP surface: keys never leave (stream error events, logs, errors),
identity comes from the key, admin and metrics need the right key, client request ids are
bounded correlation ids."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from hybridfast.config import parse_config
from hybridfast.server.app import create_app
from tests.conftest import fake_config
from tests.fakes import FakeUpstream

# Built from parts: no key-shaped literal in the source.
UPSTREAM_KEY = "-".join(["sk", "proj", "UpStReAmSecret0123456789"])
MASTER = "master-" + "Secret-987654"
ATTACKER = "attacker-key-1"
VICTIM = "victim-key-2"
METRICS = "metrics-scrape-key-3"

MakeClient = Callable[[str], Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def gateway_client(aiohttp_client: Any) -> MakeClient:
    async def make(config_text: str) -> TestClient[Any, Any]:
        config = parse_config(config_text).config
        client: TestClient[Any, Any] = await aiohttp_client(create_app(config))
        return client

    return make


# --- a stream that breaks with an error event quoting the key ------------------------------

LEAKS = [UPSTREAM_KEY, UPSTREAM_KEY.upper(), base64.b64encode(UPSTREAM_KEY.encode()).decode()]
LEAK_TEXT = "bad key " + " / ".join(LEAKS)


def _openai_stream() -> list[bytes]:
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    first = {**chunk, "choices": [{"index": 0, "delta": {"content": "Hel"}}]}
    error = {"error": {"message": LEAK_TEXT, "type": "server_error", "code": None}}
    return [b"data: " + orjson.dumps(first) + b"\n\n", b"data: " + orjson.dumps(error) + b"\n\n"]


def _anthropic_stream() -> list[bytes]:
    start = {
        "type": "message_start",
        "message": {
            "id": "m",
            "type": "message",
            "role": "assistant",
            "model": "m",
            "content": [],
            "usage": {"input_tokens": 3, "output_tokens": 1},
        },
    }
    block = {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    delta = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": "Hel"},
    }
    error = {"type": "error", "error": {"type": "api_error", "message": LEAK_TEXT}}
    return [
        b"event: " + name.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"
        for name, body in (
            ("message_start", start),
            ("content_block_start", block),
            ("content_block_delta", delta),
            ("error", error),
        )
    ]


def _ollama_stream() -> list[bytes]:
    first = {"model": "m", "message": {"role": "assistant", "content": "Hel"}, "done": False}
    return [orjson.dumps(first) + b"\n", orjson.dumps({"error": LEAK_TEXT}) + b"\n"]


STREAMS = {
    "openai": ("/v1/chat/completions", _openai_stream),
    "anthropic": ("/v1/messages", _anthropic_stream),
    "ollama": ("/api/chat", _ollama_stream),
}


async def leaky_upstream(kind: str) -> AsyncIterator[str]:
    path, pieces = STREAMS[kind]

    async def handle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={
                "Content-Type": "application/x-ndjson" if kind == "ollama" else "text/event-stream"
            }
        )
        await resp.prepare(request)
        for piece in pieces():
            await resp.write(piece)
            await asyncio.sleep(0.01)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post(path, handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    try:
        yield f"http://127.0.0.1:{port}" + ("/v1" if kind == "openai" else "")
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("kind", ["openai", "anthropic", "ollama"])
@pytest.mark.parametrize("client_path", ["/v1/chat/completions", "/v1/messages"])
async def test_error_events_inside_streams_never_carry_the_key(
    gateway_client: MakeClient, kind: str, client_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    async for base_url in leaky_upstream(kind):
        client = await gateway_client(
            "providers:\n"
            f"  - {{name: up, kind: {kind}, base_url: '{base_url}', api_key: {UPSTREAM_KEY},"
            " max_retries: 0}\n"
            "models:\n  - {name: chat, provider: up, model: m}\n"
            "ledger: {backend: memory}\n"
            "cache: {exact: {enabled: false}, semantic: {enabled: false}}\n"
        )
        body: dict[str, Any] = {
            "model": "chat",
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
        }
        if client_path == "/v1/messages":
            body["max_tokens"] = 16
        with caplog.at_level(logging.DEBUG):
            resp = await client.post(client_path, json=body)
            text = await resp.text()
        assert resp.status < 500
        for leak in LEAKS:
            assert leak not in text
            assert leak.lower() not in text.lower()
            assert leak not in caplog.text
        assert "error" in text  # the client is told the stream failed


# --- keys in malformed headers ------------------------------------------------------------


async def test_a_malformed_authorization_header_is_not_logged_with_its_key(
    gateway_client: MakeClient, fake_openai: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    client = await gateway_client(fake_config(fake_openai, server=f"  master_key: {MASTER}"))
    host, port = client.server.host, client.server.port
    with caplog.at_level(logging.DEBUG):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + MASTER.encode() + b"\x01\x7f\r\n"
            b"Content-Length: 2\r\n\r\n{}"
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(65536), 10)
        writer.close()
        await asyncio.sleep(0.05)
    assert answer.split(b" ", 2)[1].startswith(b"4")
    assert MASTER.encode() not in answer
    assert MASTER not in caplog.text


# --- identity comes from the key ----------------------------------------------------------


def _tenants(fake: FakeUpstream, allow: bool = False) -> str:
    return fake_config(
        fake,
        server=f"  master_key: {MASTER}",
        extra=(
            "keys:\n"
            f"  - {{key: {ATTACKER}, name: attacker, team: red"
            + (", allow_client_user: true" if allow else "")
            + "}\n"
            f"  - {{key: {VICTIM}, name: victim, user: victim, team: blue}}\n"
            "budgets:\n"
            "  - {scope: user, name: victim, limit_usd: 0.001}\n"
            "cache: {exact: {enabled: false}, semantic: {enabled: false}}\n"
        ),
    )


def _chat(user_field: dict[str, Any]) -> dict[str, Any]:
    return {"model": "chat", "messages": [{"role": "user", "content": "hi"}], **user_field}


@pytest.mark.parametrize("allow", [False, True])
@pytest.mark.parametrize(
    ("path", "body"),
    [
        # 1000 output tokens at $2/Mtok: more than the victim's $0.001 budget allows.
        ("/v1/chat/completions", _chat({"user": "victim", "max_tokens": 1000})),
        (
            "/v1/messages",
            {**_chat({"metadata": {"user_id": "victim"}}), "max_tokens": 1000},
        ),
    ],
)
async def test_a_body_cannot_spend_another_users_budget(
    gateway_client: MakeClient,
    fake_openai: FakeUpstream,
    path: str,
    body: dict[str, Any],
    allow: bool,
) -> None:
    """The victim's budget is exhausted by design; before, naming the victim in the body made
    the attacker's requests count against it (and answer 429)."""
    client = await gateway_client(_tenants(fake_openai, allow))
    own = await client.post(path, json=body, headers={"Authorization": f"Bearer {VICTIM}"})
    assert own.status == 429  # the budget is real
    resp = await client.post(path, json=body, headers={"Authorization": f"Bearer {ATTACKER}"})
    assert resp.status == 200, await resp.text()


async def test_embeddings_user_cannot_name_another_tenant(
    gateway_client: MakeClient, fake_openai: FakeUpstream
) -> None:
    client = await gateway_client(_tenants(fake_openai))
    body = {"model": "hashing", "input": "hi", "user": "victim"}
    resp = await client.post(
        "/v1/embeddings", json=body, headers={"Authorization": f"Bearer {ATTACKER}"}
    )
    assert resp.status == 200, await resp.text()
    spend = await client.get("/admin/spend?by=user", headers={"Authorization": f"Bearer {MASTER}"})
    assert spend.status == 200
    rows = (await spend.json())["rows"]
    assert "victim" not in [row["group"] for row in rows], rows
    by_key = await client.get("/admin/spend?by=key", headers={"Authorization": f"Bearer {MASTER}"})
    assert [row["group"] for row in (await by_key.json())["rows"]] == ["attacker"]


# --- admin and metrics --------------------------------------------------------------------


async def test_admin_refuses_everyone_without_a_master_key(
    gateway_client: MakeClient, fake_openai: FakeUpstream
) -> None:
    client = await gateway_client(fake_config(fake_openai))
    for method, path in (
        ("GET", "/admin/budgets"),
        ("PUT", "/admin/budgets"),
        ("GET", "/admin/spend"),
    ):
        resp = await client.request(method, path, json={})
        assert resp.status == 403, (path, await resp.text())
        assert (await resp.json())["error"]["code"] == "ERR_FORBIDDEN"


async def test_admin_open_on_loopback_is_explicit(
    gateway_client: MakeClient, fake_openai: FakeUpstream
) -> None:
    client = await gateway_client(fake_config(fake_openai, server="  admin: open-on-loopback"))
    resp = await client.get("/admin/budgets")
    assert resp.status == 200, await resp.text()


async def test_metrics_need_the_metrics_or_master_key(
    gateway_client: MakeClient, fake_openai: FakeUpstream
) -> None:
    client = await gateway_client(
        fake_config(
            fake_openai,
            server=f"  master_key: {MASTER}\n  metrics_key: {METRICS}",
            extra=f"keys:\n  - {{key: {VICTIM}, name: victim, team: blue}}\n",
        )
    )

    async def status(path: str, key: str, method: str = "GET") -> int:
        body = _chat({}) if method == "POST" else None
        resp = await client.request(
            method, path, json=body, headers={"Authorization": f"Bearer {key}"}
        )
        return resp.status

    assert await status("/metrics", VICTIM) == 403
    assert await status("/metrics", METRICS) == 200
    assert await status("/metrics", MASTER) == 200
    # The metrics key reads metrics and nothing else.
    assert await status("/v1/chat/completions", METRICS, "POST") in (401, 403)
    assert await status("/admin/budgets", METRICS) in (401, 403)


async def test_metrics_page_never_shows_a_key(
    gateway_client: MakeClient, fake_openai: FakeUpstream
) -> None:
    client = await gateway_client(
        fake_config(
            fake_openai,
            server=f"  master_key: {MASTER}",
            extra=f"keys:\n  - {{key: {VICTIM}, name: '{VICTIM}', team: blue}}\n",
        )
    )
    await client.post(
        "/v1/chat/completions", json=_chat({}), headers={"Authorization": f"Bearer {VICTIM}"}
    )
    resp = await client.get("/metrics", headers={"Authorization": f"Bearer {MASTER}"})
    assert resp.status == 200
    assert VICTIM not in await resp.text()


# --- request ids --------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/embeddings", "/v1/chat/completions"])
async def test_a_client_request_id_is_a_bounded_correlation_id(
    gateway_client: MakeClient, fake_openai: FakeUpstream, path: str
) -> None:
    client = await gateway_client(fake_config(fake_openai))
    body = {"model": "hashing", "input": "hi"} if path == "/v1/embeddings" else _chat({})
    resp = await client.post(path, json=body, headers={"x-hybridfast-request-id": "trace-42"})
    assert resp.status == 200
    own = resp.headers["x-hybridfast-request-id"]
    assert own != "trace-42"
    assert resp.headers["x-hybridfast-client-request-id"] == "trace-42"
    huge = "a" * 16_000
    resp = await client.post(path, json=body, headers={"x-hybridfast-request-id": huge})
    assert resp.status == 200
    assert resp.headers["x-hybridfast-request-id"] != huge
    assert "x-hybridfast-client-request-id" not in resp.headers
    # The same client id twice: two requests, two gateway ids.
    first = await client.post(path, json=body, headers={"x-hybridfast-request-id": "dup"})
    second = await client.post(path, json=body, headers={"x-hybridfast-request-id": "dup"})
    assert first.headers["x-hybridfast-request-id"] != second.headers["x-hybridfast-request-id"]


async def test_a_non_utf8_request_id_is_ignored_not_a_502(
    gateway_client: MakeClient, fake_openai: FakeUpstream
) -> None:
    client = await gateway_client(fake_config(fake_openai))
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    body = orjson.dumps({"model": "hashing", "input": "hi"})
    writer.write(
        b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"x-hybridfast-request-id: \xff\xfe\xc3(\r\n"
        + b"Content-Length: "
        + str(len(body)).encode()
        + b"\r\nConnection: close\r\n\r\n"
        + body
    )
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    status = int(answer.split(b" ", 2)[1])
    assert status < 500, answer[:300]
