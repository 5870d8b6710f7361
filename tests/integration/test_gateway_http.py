"""The gateway's HTTP surface in-process (aiohttp test client) against the fake upstreams:
every client protocol × every upstream kind, streaming and not; headers; fallback; mid-stream
recovery; bad input; auth; client disconnects; cache hits; metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from hybridfast._core import format_usd
from hybridfast.config import parse_config
from hybridfast.deployments import build_deployments
from hybridfast.pipeline.gateway import Gateway
from hybridfast.pipeline.recovery import CONTINUE_PROMPT
from hybridfast.routing import build_router
from hybridfast.server.app import create_app
from hybridfast.types import CacheHit, ChatAnswer, Usage
from tests.conftest import fake_config
from tests.fakes import DEFAULT_REPLY, FakeUpstream, split_reply
from tests.fakes.parts import RecordingCache, RecordingLedger, RecordingRouter
from tests.fakes.upstream import count_tokens, prompt_text

HEADERS = (
    "x-hybridfast-request-id",
    "x-hybridfast-deployment",
    "x-hybridfast-cost-usd",
    "x-hybridfast-cache",
    "x-hybridfast-overhead-ms",
)
# fake_config prices every deployment at $1 / $2 per million tokens in / out.
PICO_IN, PICO_OUT = 1_000_000, 2_000_000


class Harness:
    def __init__(self, client: TestClient, gateway: Gateway, ledger: RecordingLedger) -> None:
        self.client = client
        self.gateway = gateway
        self.ledger = ledger
        self.cache: RecordingCache = gateway.cache  # type: ignore[assignment]
        self.router: RecordingRouter = gateway.router  # type: ignore[assignment]

    async def openai(self, stream: bool = False, **body: Any) -> Any:
        payload = {
            "model": "chat",
            "messages": [{"role": "user", "content": "Say something short."}],
            **body,
        }
        if stream:
            payload["stream"] = True
        return await self.client.post("/v1/chat/completions", json=payload)

    async def anthropic(self, stream: bool = False, **body: Any) -> Any:
        payload = {
            "model": "chat",
            "max_tokens": 100,
            "messages": [{"role": "user", "content": "Say something short."}],
            **body,
        }
        if stream:
            payload["stream"] = True
        return await self.client.post("/v1/messages", json=payload)


Make = Callable[..., Awaitable[Harness]]


@pytest.fixture
def gateway(aiohttp_client: Any) -> Make:
    async def make(
        config_text: str,
        *,
        ledger: RecordingLedger | None = None,
        cache: RecordingCache | None = None,
    ) -> Harness:
        config = parse_config(config_text).config
        ledger = ledger or RecordingLedger()
        deployments = build_deployments(config)
        gw = Gateway(
            config,
            deployments=deployments,
            router=RecordingRouter(build_router(config, deployments)),
            ledger=ledger,
            cache=cache or RecordingCache(),
        )
        client = await aiohttp_client(create_app(config, gateway=gw))
        return Harness(client, gw, ledger)

    return make


def sse_data(text: str) -> list[Any]:
    """The JSON of each `data:` line of an SSE body (`[DONE]` kept as the string)."""
    out: list[Any] = []
    for block in text.split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data: "):
                payload = line[6:]
                out.append(payload if payload == "[DONE]" else orjson.loads(payload))
    return out


def sse_events(text: str) -> list[tuple[str, Any]]:
    out = []
    for block in text.strip().split("\n\n"):
        lines = block.split("\n")
        assert lines[0].startswith("event: "), block
        assert lines[1].startswith("data: "), block
        out.append((lines[0][7:], orjson.loads(lines[1][6:])))
    return out


def expected_usage(fake: FakeUpstream) -> tuple[int, int]:
    body = fake.requests[-1].body
    return count_tokens(prompt_text(body)), len(split_reply(DEFAULT_REPLY, fake.chunks))


def cost_of(input_tokens: int, output_tokens: int) -> int:
    return input_tokens * PICO_IN + output_tokens * PICO_OUT


def check_headers(resp: Any, deployment: str = "chat#0", cache: str = "miss") -> None:
    for name in HEADERS:
        assert name in resp.headers, name
    assert resp.headers["x-hybridfast-deployment"] == deployment
    assert resp.headers["x-hybridfast-cache"] == cache
    assert float(resp.headers["x-hybridfast-overhead-ms"]) >= 0


UPSTREAMS = ["openai", "anthropic", "ollama", "openai-compatible"]


@pytest.fixture(params=UPSTREAMS)
def upstream(request: Any, fake_loop: Any) -> Any:
    kind = request.param
    fake = FakeUpstream("openai" if kind == "openai-compatible" else kind)
    fake_loop.run(fake.start())
    yield kind, fake
    fake_loop.run(fake.stop())


def config_for(kind: str, fake: FakeUpstream, **kw: Any) -> str:
    text = fake_config(fake, **kw)
    if kind == "openai-compatible":
        text = text.replace("kind: openai", "kind: openai-compatible")
    return text


# --- every client protocol × every upstream kind ----------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_openai_client_over_every_upstream(
    gateway: Make, upstream: Any, stream: bool
) -> None:
    kind, fake = upstream
    h = await gateway(config_for(kind, fake))
    resp = await h.openai(
        stream,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Say something short."}]},
        ],
        max_tokens=50,
        stream_options={"include_usage": True},
    )
    assert resp.status == 200, await resp.text()
    check_headers(resp)
    n_in, n_out = expected_usage(fake)
    cost = cost_of(n_in, n_out)
    if not stream:
        body = await resp.json()
        assert body["object"] == "chat.completion"
        assert body["choices"][0]["message"]["content"] == DEFAULT_REPLY
        assert body["choices"][0]["finish_reason"] == "stop"
        assert body["usage"]["prompt_tokens"] == n_in
        assert body["usage"]["completion_tokens"] == n_out
        assert resp.headers["x-hybridfast-cost-usd"] == format_usd(cost)
        assert body["x_hybridfast"]["cost_usd"] == format_usd(cost)
    else:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        data = sse_data(await resp.text())
        assert data[-1] == "[DONE]"
        chunks = data[:-1]
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        text = "".join(
            c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
        )
        assert text == DEFAULT_REPLY
        assert (
            len([c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]) > 1
        )
        finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
        assert [c["choices"][0]["finish_reason"] for c in finish] == ["stop"]
        usage_chunk = chunks[-1]
        assert usage_chunk["choices"] == []
        assert usage_chunk["usage"]["prompt_tokens"] == n_in
        assert usage_chunk["usage"]["completion_tokens"] == n_out
        assert usage_chunk["x_hybridfast"]["cost_usd"] == format_usd(cost)
        assert resp.headers["x-hybridfast-cost-usd"] == "pending"
    # What the upstream was sent, in its own format.
    sent = fake.requests[-1].body
    assert sent["model"] == f"{fake.kind}-model-0"
    if kind == "anthropic":
        assert sent["system"] == "Be brief."
        assert sent["max_tokens"] == 50
        assert sent["messages"] == [
            {"role": "user", "content": [{"type": "text", "text": "Say something short."}]}
        ]
    elif kind == "ollama":
        assert sent["stream"] is stream
        assert sent["options"]["num_predict"] == 50
        assert sent["messages"][1] == {"role": "user", "content": "Say something short."}
    else:
        key = "max_completion_tokens" if kind == "openai" else "max_tokens"
        assert sent[key] == 50
        if stream:
            assert sent["stream_options"] == {"include_usage": True}
    # The ledger: reserved the worst case, settled the exact cost.
    ((_, dep, rid, worst),) = h.ledger.reserved
    assert dep == "chat#0"
    assert worst >= cost
    (record,) = h.ledger.records
    assert record.cost == cost
    assert record.request_id == rid == resp.headers["x-hybridfast-request-id"]
    assert record.status == 200
    assert record.usage.input_tokens == n_in
    assert not record.usage.estimated
    assert h.router.events == [("started", "chat#0", None), ("finished", "chat#0", True)]
    # A complete answer is offered to the cache.
    ((_, _, stored),) = h.cache.stored
    assert stored.content == DEFAULT_REPLY
    assert stored.cost == cost


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_anthropic_client_over_every_upstream(
    gateway: Make, upstream: Any, stream: bool
) -> None:
    kind, fake = upstream
    h = await gateway(config_for(kind, fake))
    resp = await h.anthropic(
        stream,
        system=[{"type": "text", "text": "Be brief."}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "Say something short."}]}],
    )
    assert resp.status == 200, await resp.text()
    check_headers(resp)
    n_in, n_out = expected_usage(fake)
    cost = cost_of(n_in, n_out)
    if not stream:
        body = await resp.json()
        assert body["type"] == "message"
        assert body["content"] == [{"type": "text", "text": DEFAULT_REPLY}]
        assert body["stop_reason"] == "end_turn"
        assert body["usage"]["input_tokens"] == n_in
        assert body["usage"]["output_tokens"] == n_out
        assert body["x_hybridfast"]["cost_usd"] == format_usd(cost)
        assert resp.headers["x-hybridfast-cost-usd"] == format_usd(cost)
    else:
        events = sse_events(await resp.text())
        names = [e for e, _ in events]
        assert names[0] == "message_start"
        assert names[1] == "content_block_start"
        assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
        assert set(names[2:-3]) == {"content_block_delta"}
        text = "".join(d["delta"]["text"] for e, d in events if e == "content_block_delta")
        assert text == DEFAULT_REPLY
        delta = events[-2][1]
        assert delta["delta"]["stop_reason"] == "end_turn"
        assert delta["usage"]["output_tokens"] == n_out
        assert delta["x_hybridfast"]["cost_usd"] == format_usd(cost)
    sent = fake.requests[-1].body
    if kind == "anthropic":
        # Anthropic to Anthropic: the client's system blocks pass through as they were.
        assert sent["system"] == [{"type": "text", "text": "Be brief."}]
        assert sent["max_tokens"] == 100
    elif kind == "ollama":
        assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    else:
        assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert h.ledger.records[0].cost == cost


# --- translation details ----------------------------------------------------------------


async def test_anthropic_usage_with_cache_tokens_is_normalised(
    gateway: Make, fake_anthropic: FakeUpstream
) -> None:
    fake_anthropic.set(usage={"input": 1000, "output": 10, "cached": 600, "cache_write": 100})
    config = fake_config(fake_anthropic, prices=False) + ""
    config = config.replace(
        "    model: anthropic-model-0",
        "    model: anthropic-model-0\n    price: {input_per_mtok: 3, output_per_mtok: 15, "
        "cached_input_per_mtok: 0.3, cache_write_per_mtok: 3.75}",
    )
    h = await gateway(config)
    resp = await h.openai()
    body = await resp.json()
    assert body["usage"]["prompt_tokens"] == 1000
    assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 600
    (record,) = h.ledger.records
    assert record.usage.cached_input_tokens == 600
    assert record.usage.cache_write_tokens == 100
    # 300 plain × $3 + 600 × $0.30 + 100 × $3.75 + 10 × $15, per million: exact picodollars.
    assert record.cost == 300 * 3_000_000 + 600 * 300_000 + 100 * 3_750_000 + 10 * 15_000_000
    # And an Anthropic client sees Anthropic's split again.
    resp = await h.anthropic()
    usage = (await resp.json())["usage"]
    assert usage == {
        "input_tokens": 300,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 600,
        "output_tokens": 10,
    }


TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_openai_tools_over_anthropic(
    gateway: Make, fake_anthropic: FakeUpstream, stream: bool
) -> None:
    fake_anthropic.set(tool_call={"name": "get_weather", "arguments": {"city": "Paris"}})
    h = await gateway(fake_config(fake_anthropic))
    resp = await h.openai(stream, tools=[TOOL], tool_choice="required")
    assert resp.status == 200, await resp.text()
    sent = fake_anthropic.requests[-1].body
    assert sent["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": TOOL["function"]["parameters"],  # type: ignore[index]
        }
    ]
    assert sent["tool_choice"] == {"type": "any"}
    if not stream:
        msg = (await resp.json())["choices"][0]
        assert msg["finish_reason"] == "tool_calls"
        (call,) = msg["message"]["tool_calls"]
        assert call["function"]["name"] == "get_weather"
        assert orjson.loads(call["function"]["arguments"]) == {"city": "Paris"}
    else:
        chunks = [c for c in sse_data(await resp.text()) if c != "[DONE]" and c["choices"]]
        deltas = [
            c["choices"][0]["delta"]["tool_calls"][0]
            for c in chunks
            if "tool_calls" in c["choices"][0]["delta"]
        ]
        assert deltas[0]["id"] == "toolu_fake0001"
        assert deltas[0]["function"]["name"] == "get_weather"
        args = "".join(d["function"]["arguments"] for d in deltas)
        assert orjson.loads(args) == {"city": "Paris"}
        assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_anthropic_tools_over_openai(
    gateway: Make, fake_openai: FakeUpstream, stream: bool
) -> None:
    fake_openai.set(tool_call={"name": "get_weather", "arguments": {"city": "Oslo"}})
    h = await gateway(fake_config(fake_openai))
    resp = await h.anthropic(
        stream,
        tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
        messages=[
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": "t1",
                        "name": "get_weather",
                        "input": {"city": "Rome"},
                    }
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "sunny"},
                    {"type": "text", "text": "And Oslo?"},
                ],
            },
        ],
    )
    assert resp.status == 200, await resp.text()
    sent = fake_openai.requests[-1].body
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["messages"][1]["tool_calls"][0]["id"] == "t1"
    assert orjson.loads(sent["messages"][1]["tool_calls"][0]["function"]["arguments"]) == {
        "city": "Rome"
    }
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": "t1", "content": "sunny"}
    assert sent["messages"][3] == {"role": "user", "content": "And Oslo?"}
    if not stream:
        body = await resp.json()
        assert body["stop_reason"] == "tool_use"
        (block,) = body["content"]
        assert block["type"] == "tool_use"
        assert block["input"] == {"city": "Oslo"}
    else:
        events = sse_events(await resp.text())
        starts = [d for e, d in events if e == "content_block_start"]
        assert starts[0]["content_block"]["type"] == "tool_use"
        assert starts[0]["content_block"]["name"] == "get_weather"
        partial = "".join(
            d["delta"]["partial_json"]
            for e, d in events
            if e == "content_block_delta" and d["delta"]["type"] == "input_json_delta"
        )
        assert orjson.loads(partial) == {"city": "Oslo"}
        assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


async def test_unknown_parameters_reach_openai_upstreams(
    gateway: Make, fake_openai: FakeUpstream
) -> None:
    h = await gateway(fake_config(fake_openai))
    resp = await h.openai(seed=7, logprobs=False, user="u-1")
    assert resp.status == 200
    sent = fake_openai.requests[-1].body
    assert sent["seed"] == 7
    assert sent["logprobs"] is False
    assert sent["user"] == "u-1"


# --- fallback and recovery ----------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 529])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_fallback_before_first_byte(
    gateway: Make,
    fake_openai: FakeUpstream,
    fake_anthropic: FakeUpstream,
    status: int,
    stream: bool,
) -> None:
    fake_openai.fail(status)
    h = await gateway(fake_config(fake_openai, fake_anthropic))
    resp = await h.openai(stream)
    assert resp.status == 200
    check_headers(resp, deployment="chat#1")
    text = await resp.text()
    assert (
        DEFAULT_REPLY in text
        or "".join(
            c["choices"][0]["delta"].get("content") or ""
            for c in sse_data(text)
            if c != "[DONE]" and c["choices"]
        )
        == DEFAULT_REPLY
    )
    assert fake_openai.calls == 1
    assert fake_anthropic.calls == 1
    assert h.router.events == [
        ("started", "chat#0", None),
        ("finished", "chat#0", False),
        ("started", "chat#1", None),
        ("finished", "chat#1", True),
    ]
    assert len(h.ledger.released) == 1
    assert len(h.ledger.records) == 1
    assert h.ledger.records[0].deployment == "chat#1"
    assert h.ledger.records[0].fallbacks == 1


async def test_connection_refused_falls_back(gateway: Make, fake_ollama: FakeUpstream) -> None:
    dead = FakeUpstream("openai")  # never started: nothing listens on its port
    dead.port = 9  # discard port: refused on loopback
    h = await gateway(fake_config(dead, fake_ollama))
    resp = await h.openai()
    assert resp.status == 200
    assert resp.headers["x-hybridfast-deployment"] == "chat#1"


@pytest.mark.parametrize("client", ["openai", "anthropic"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_all_deployments_fail(
    gateway: Make,
    fake_openai: FakeUpstream,
    fake_ollama: FakeUpstream,
    client: str,
    stream: bool,
) -> None:
    fake_openai.fail(500)
    fake_ollama.fail(429, retry_after=3)
    h = await gateway(fake_config(fake_openai, fake_ollama))
    resp = await (h.openai(stream) if client == "openai" else h.anthropic(stream))
    assert resp.status == 429  # the last failure's status
    assert resp.headers["Retry-After"] == "3"
    assert "x-hybridfast-request-id" in resp.headers
    body = await resp.json()
    if client == "openai":
        assert body["error"]["code"] == "ERR_PROVIDER_UNAVAILABLE"
        assert "hint:" in body["error"]["message"]
        assert set(body["error"]) == {"message", "type", "code", "param"}
    else:
        assert body["type"] == "error"
        assert body["error"]["type"] == "rate_limit_error"
        assert body["error"]["code"] == "ERR_PROVIDER_UNAVAILABLE"
    assert "test-key" not in await resp.text()
    assert h.ledger.held == {}
    (record,) = h.ledger.records
    assert record.status == 429
    assert record.cost == 0
    assert record.deployment is None


async def test_all_fail_with_500_answers_502_family(
    gateway: Make, fake_openai: FakeUpstream
) -> None:
    fake_openai.fail(500)
    h = await gateway(fake_config(fake_openai))
    resp = await h.openai()
    assert resp.status == 500
    assert (await resp.json())["error"]["code"] == "ERR_PROVIDER_UNAVAILABLE"


async def test_upstream_400_is_not_retried_elsewhere(
    gateway: Make, fake_openai: FakeUpstream, fake_anthropic: FakeUpstream
) -> None:
    fake_openai.fail(400)
    h = await gateway(fake_config(fake_openai, fake_anthropic))
    resp = await h.openai()
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "ERR_INVALID_REQUEST"
    assert fake_anthropic.calls == 0


@pytest.mark.parametrize("client", ["openai", "anthropic"])
@pytest.mark.parametrize("second", ["openai", "anthropic", "ollama"])
async def test_mid_stream_recovery(
    gateway: Make, fake_loop: Any, fake_openai: FakeUpstream, client: str, second: str
) -> None:
    backup = FakeUpstream(second)
    fake_loop.run(backup.start())
    try:
        backup.set(reply=" rest of it.")
        fake_openai.cut(3)
        h = await gateway(fake_config(fake_openai, backup))
        resp = await (h.openai(True) if client == "openai" else h.anthropic(True))
        assert resp.status == 200
        body = await resp.text()
        prefix = "".join(split_reply(DEFAULT_REPLY, fake_openai.chunks)[:3])
        if client == "openai":
            data = sse_data(body)
            assert data[-1] == "[DONE]"
            text = "".join(
                c["choices"][0]["delta"].get("content") or "" for c in data[:-1] if c["choices"]
            )
            meta = data[-2]["x_hybridfast"]
        else:
            events = sse_events(body)
            assert events[-1][0] == "message_stop"
            text = "".join(
                d["delta"].get("text", "") for e, d in events if e == "content_block_delta"
            )
            meta = events[-2][1]["x_hybridfast"]
            # One unbroken text block.
            assert [e for e, _ in events].count("content_block_start") == 1
        assert text == prefix + " rest of it."
        assert meta["recovered"] is True
        assert meta["deployments"] == ["chat#0", "chat#1"]
        assert meta["deployment"] == "chat#1"
        # The backup was asked to continue the partial answer.
        sent = backup.requests[-1].body
        msgs = sent["messages"]
        if second == "anthropic":
            assert msgs[-1] == {
                "role": "assistant",
                "content": [{"type": "text", "text": prefix.rstrip()}],
            }
        else:
            assert msgs[-2]["role"] == "assistant"
            assert msgs[-2]["content"] == prefix
            assert msgs[-1] == {"role": "user", "content": CONTINUE_PROMPT}
        # The ledger: one record with both parts; the cut part estimated.
        (record,) = h.ledger.records
        assert record.deployment == "chat#1"
        assert record.usage.estimated
        assert record.cost > 0
        assert h.ledger.held == {}
    finally:
        fake_loop.run(backup.stop())


@pytest.mark.parametrize("client", ["openai", "anthropic"])
async def test_stream_recovery_switched_off(
    gateway: Make, fake_openai: FakeUpstream, fake_anthropic: FakeUpstream, client: str
) -> None:
    fake_openai.cut(2)
    h = await gateway(fake_config(fake_openai, fake_anthropic, server="  stream_recovery: false"))
    resp = await (h.openai(True) if client == "openai" else h.anthropic(True))
    assert resp.status == 200
    body = await resp.text()
    assert fake_anthropic.calls == 0
    if client == "openai":
        data = sse_data(body)
        assert data[-1]["error"]["code"] == "ERR_PROVIDER_UNAVAILABLE"
        assert "stream_recovery" in data[-1]["error"]["message"]
    else:
        events = sse_events(body)
        assert events[-1][0] == "error"
        assert events[-1][1]["error"]["code"] == "ERR_PROVIDER_UNAVAILABLE"
    (record,) = h.ledger.records
    assert record.status == 502
    assert record.usage.estimated
    assert record.cost > 0


async def test_upstream_without_usage_is_estimated(
    gateway: Make, fake_ollama: FakeUpstream
) -> None:
    fake_ollama.set(no_usage=True)
    h = await gateway(fake_config(fake_ollama))
    for stream in (False, True):
        resp = await h.openai(stream)
        assert resp.status == 200
        text = await resp.text()
        meta = (
            orjson.loads(text)["x_hybridfast"] if not stream else sse_data(text)[-2]["x_hybridfast"]
        )
        assert meta["usage_estimated"] is True
    for record in h.ledger.records:
        assert record.usage.estimated
        assert record.usage.output_tokens == count_tokens(DEFAULT_REPLY)
        assert record.cost == cost_of(record.usage.input_tokens, record.usage.output_tokens)


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v1/chat/completions", b"{not json", 400, "ERR_INVALID_REQUEST"),
        ("/v1/chat/completions", b"[1, 2]", 400, "ERR_INVALID_REQUEST"),
        (
            "/v1/chat/completions",
            b'{"model": "chat", "messages": "hi"}',
            400,
            "ERR_INVALID_REQUEST",
        ),
        ("/v1/chat/completions", b'{"model": "chat", "messages": []}', 400, "ERR_INVALID_REQUEST"),
        (
            "/v1/chat/completions",
            b'{"model": "chat", "messages": [{"role": "wizard", "content": "x"}]}',
            400,
            "ERR_INVALID_REQUEST",
        ),
        (
            "/v1/chat/completions",
            b'{"model": "chat", "messages": [{"role": "user", "content": "x"}], '
            b'"temperature": "hot"}',
            400,
            "ERR_INVALID_REQUEST",
        ),
        (
            "/v1/chat/completions",
            b'{"model": "chat", "messages": [{"role": "user", "content": "x"}], "max_tokens": -5}',
            400,
            "ERR_INVALID_REQUEST",
        ),
        (
            "/v1/chat/completions",
            b'{"model": "chat", "messages": [{"role": "user", "content": "x"}], "n": 3, '
            b'"stream": true}',
            400,
            "ERR_UNSUPPORTED",
        ),
        (
            "/v1/chat/completions",
            b'{"model": "chat", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
            400,
            "ERR_INVALID_REQUEST",
        ),
        (
            "/v1/chat/completions",
            b'{"model": "gpt-nope", "messages": [{"role": "user", "content": "x"}]}',
            404,
            "ERR_MODEL_NOT_FOUND",
        ),
        ("/v1/messages", b"{oops", 400, "ERR_INVALID_REQUEST"),
        (
            "/v1/messages",
            b'{"model": "chat", "messages": [{"role": "user", "content": "x"}]}',
            400,
            "ERR_INVALID_REQUEST",
        ),
        (
            "/v1/messages",
            b'{"model": "chat", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}',
            400,
            "ERR_INVALID_REQUEST",
        ),
        (
            "/v1/messages",
            b'{"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}',
            404,
            "ERR_MODEL_NOT_FOUND",
        ),
        ("/v1/nothing-here", b"{}", 404, "ERR_NOT_FOUND"),
    ],
)
async def test_bad_input(
    gateway: Make, fake_openai: FakeUpstream, path: str, body: bytes, status: int, code: str
) -> None:
    h = await gateway(fake_config(fake_openai))
    resp = await h.client.post(path, data=body, headers={"Content-Type": "application/json"})
    assert resp.status == status
    err = await resp.json()
    if path == "/v1/messages":
        assert err["type"] == "error"
        assert err["error"]["code"] == code
        assert err["error"]["message"]
    else:
        assert err["error"]["code"] == code
        assert err["error"]["message"]
        assert "Traceback" not in err["error"]["message"]
    assert fake_openai.calls == 0
    assert h.ledger.reserved == []
    assert h.ledger.held == {}


async def test_body_over_the_limit_is_413(gateway: Make, fake_openai: FakeUpstream) -> None:
    h = await gateway(fake_config(fake_openai, server="  max_body_bytes: 2000"))
    resp = await h.openai(messages=[{"role": "user", "content": "x" * 5000}])
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "ERR_REQUEST_TOO_LARGE"
    assert fake_openai.calls == 0


async def test_budget_refusal(gateway: Make, fake_openai: FakeUpstream) -> None:
    h = await gateway(fake_config(fake_openai), ledger=RecordingLedger(limit=10))
    resp = await h.openai()
    assert resp.status == 429
    assert (await resp.json())["error"]["code"] == "ERR_BUDGET_EXCEEDED"
    assert fake_openai.calls == 0


# --- auth --------------------------------------------------------------------------------

AUTH = """
  master_key: master-secret
keys:
  - key: team-key
    name: alpha
    team: red
"""


async def test_auth(gateway: Make, fake_openai: FakeUpstream) -> None:
    config = fake_config(fake_openai, server="  master_key: master-secret")
    config += "keys:\n  - {key: team-key, name: alpha, team: red}\n"
    h = await gateway(config)
    body = {"model": "chat", "messages": [{"role": "user", "content": "x"}]}
    resp = await h.client.post("/v1/chat/completions", json=body)
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "ERR_UNAUTHORIZED"
    resp = await h.client.post(
        "/v1/chat/completions", json=body, headers={"Authorization": "Bearer wrong"}
    )
    assert resp.status == 401
    assert "wrong" not in await resp.text()
    resp = await h.client.post(
        "/v1/chat/completions", json=body, headers={"Authorization": "Bearer team-key"}
    )
    assert resp.status == 200
    assert h.ledger.records[-1].caller.key_name == "alpha"
    assert h.ledger.records[-1].caller.team == "red"
    resp = await h.client.post(
        "/v1/messages",
        json={**body, "max_tokens": 5},
        headers={"x-api-key": "master-secret"},
    )
    assert resp.status == 200
    assert h.ledger.records[-1].caller.key_name == "master"
    resp = await h.client.post(
        "/v1/messages", json={**body, "max_tokens": 5}, headers={"x-api-key": "nope"}
    )
    assert resp.status == 401
    assert (await resp.json())["error"]["type"] == "authentication_error"
    assert (await h.client.get("/healthz")).status == 200
    assert (await h.client.get("/v1/models")).status == 401
    resp = await h.client.get("/admin/anything", headers={"Authorization": "Bearer team-key"})
    assert resp.status == 403
    assert fake_openai.calls == 2


# --- client disconnects --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["openai", "anthropic", "ollama"])
async def test_client_disconnect_cancels_the_upstream(
    gateway: Make, fake_loop: Any, kind: str
) -> None:
    fake = FakeUpstream(kind)
    fake_loop.run(fake.start())
    try:
        fake.set(chunks=40, per_chunk_s=0.05, reply="word " * 40)
        h = await gateway(fake_config(fake))
        resp = await h.openai(True)
        assert resp.status == 200
        await resp.content.readany()  # the first bytes arrive ...
        resp.close()  # ... and the client goes away
        for _ in range(100):
            if fake.cancelled and h.ledger.records:
                break
            await asyncio.sleep(0.02)
        assert fake.cancelled == 1
        (record,) = h.ledger.records
        assert record.status == 499
        assert 0 < record.usage.output_tokens < 40
        assert h.ledger.held == {}
    finally:
        fake_loop.run(fake.stop())


# --- cache ---------------------------------------------------------------------------------


@pytest.mark.parametrize("client", ["openai", "anthropic"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_cache_hit_is_answered_without_upstream(
    gateway: Make, fake_openai: FakeUpstream, client: str, stream: bool
) -> None:
    answer = ChatAnswer(
        content="A cached answer with several words in it.",
        usage=Usage(input_tokens=5, output_tokens=9),
        model="openai-model-0",
        deployment="chat#0",
        cost=23_000_000,
    )
    cache = RecordingCache(hits={"Say something short.": CacheHit(answer, "semantic-hit", 0.97)})
    h = await gateway(fake_config(fake_openai), cache=cache)
    resp = await (h.openai(stream) if client == "openai" else h.anthropic(stream))
    assert resp.status == 200
    check_headers(resp, cache="semantic-hit")
    assert resp.headers["x-hybridfast-cost-usd"] == "0"
    text = await resp.text()
    if stream:
        if client == "openai":
            data = sse_data(text)
            pieces = [
                c["choices"][0]["delta"]["content"]
                for c in data[1:-1]
                if c["choices"] and c["choices"][0]["delta"].get("content")
            ]
        else:
            pieces = [d["delta"]["text"] for e, d in sse_events(text) if e == "content_block_delta"]
        assert len(pieces) > 1  # replayed as a real stream
        assert "".join(pieces) == answer.content
    else:
        assert answer.content in text
    assert fake_openai.calls == 0
    (record,) = h.ledger.records
    assert record.cost == 0
    assert record.saved_cost == 23_000_000
    assert record.cache == "semantic-hit"
    assert cache.stored == []


async def test_no_store_bypasses_the_cache(gateway: Make, fake_openai: FakeUpstream) -> None:
    h = await gateway(fake_config(fake_openai))
    resp = await h.client.post(
        "/v1/chat/completions",
        json={"model": "chat", "messages": [{"role": "user", "content": "x"}]},
        headers={"Cache-Control": "no-store"},
    )
    assert resp.headers["x-hybridfast-cache"] == "bypass"
    assert h.cache.lookups == []
    assert h.cache.stored == []


# --- the other endpoints ---------------------------------------------------------------------


async def test_models_health_metrics(gateway: Make, fake_openai: FakeUpstream) -> None:
    config = fake_config(fake_openai) + "routes:\n  auto: {candidates: [chat], strategy: cost}\n"
    h = await gateway(config)
    models = await (await h.client.get("/v1/models")).json()
    ids = {m["id"]: m["x_hybridfast"] for m in models["data"]}
    assert ids["chat"] == {"kind": "group", "deployments": ["chat#0"]}
    assert ids["auto"]["kind"] == "route"
    assert ids["auto"]["candidates"] == ["chat"]
    assert (await h.client.get("/healthz")).status == 200
    ready = await (await h.client.get("/readyz")).json()
    assert ready["status"] == "ready"
    assert ready["providers"] == ["p0"]
    await h.openai()
    await h.openai(True)
    text = await (await h.client.get("/metrics")).text()
    assert (
        'hybridfast_requests_total{cache="miss",code="",deployment="chat#0",route="chat",'
        'status="200"}' in text
    )
    assert "hybridfast_gateway_overhead_seconds_bucket" in text
    assert 'hybridfast_time_to_first_token_seconds_count{deployment="chat#0"}' in text
    assert "test-key" not in text


async def test_upstream_timeout_answers_504(gateway: Make, fake_openai: FakeUpstream) -> None:
    fake_openai.latency(first_byte_s=2.0)
    config = fake_config(fake_openai).replace(
        "    max_retries: 0", "    max_retries: 0\n    timeout: {first_byte_s: 0.1}"
    )
    h = await gateway(config)
    resp = await h.openai()
    assert resp.status == 504
    body = await resp.json()
    assert body["error"]["code"] == "ERR_PROVIDER_UNAVAILABLE"
    assert "timed out" in body["error"]["message"]


# --- the aiohttp client (what https:// upstreams get) -----------------------------------


@pytest.mark.parametrize("kind", ["openai", "anthropic", "ollama"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_aiohttp_client_path(gateway: Make, fake_loop: Any, kind: str, stream: bool) -> None:
    fake = FakeUpstream(kind)
    fake_loop.run(fake.start())
    try:
        h = await gateway(fake_config(fake, http_client="aiohttp"))
        assert type(h.gateway.providers["p0"].client).__name__ == "AiohttpClient"
        resp = await h.openai(stream, stream_options={"include_usage": True})
        assert resp.status == 200
        n_in, n_out = expected_usage(fake)
        text = await resp.text()
        if stream:
            data = sse_data(text)
            got = "".join(
                c["choices"][0]["delta"].get("content") or "" for c in data[:-1] if c["choices"]
            )
            meta = data[-2]["x_hybridfast"]
        else:
            got = orjson.loads(text)["choices"][0]["message"]["content"]
            meta = orjson.loads(text)["x_hybridfast"]
        assert got == DEFAULT_REPLY
        assert meta["cost_usd"] == format_usd(cost_of(n_in, n_out))
    finally:
        fake_loop.run(fake.stop())


async def test_aiohttp_client_recovery_and_disconnect(
    gateway: Make, fake_openai: FakeUpstream, fake_anthropic: FakeUpstream
) -> None:
    h = await gateway(fake_config(fake_openai, fake_anthropic, http_client="aiohttp"))
    fake_openai.cut(3)
    resp = await h.openai(True)
    data = sse_data(await resp.text())
    assert data[-2]["x_hybridfast"]["recovered"] is True
    # The router may now prefer either deployment: make both slow streams.
    for fake in (fake_openai, fake_anthropic):
        fake.reset()
        fake.set(chunks=40, per_chunk_s=0.05, reply="word " * 40)
    resp = await h.openai(True)
    await resp.content.readany()
    resp.close()
    for _ in range(100):
        if fake_openai.cancelled + fake_anthropic.cancelled:
            break
        await asyncio.sleep(0.02)
    assert fake_openai.cancelled + fake_anthropic.cancelled == 1


async def test_upstream_messages_never_carry_the_key(
    gateway: Make, fake_openai: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-proj-Abcdefghijklmnop1234WXYZ"
    fake_openai.fail(401)
    h = await gateway(fake_config(fake_openai).replace("api_key: test-key-0", f"api_key: {secret}"))
    with caplog.at_level("DEBUG"):
        resp = await h.openai()
    text = await resp.text()
    assert resp.status == 502
    assert "Incorrect API key provided" in text  # the upstream's reason survives ...
    for leak in (secret, secret[-4:], secret[:12]):
        assert leak not in text  # ... without the key or its quoted ends
        assert leak not in caplog.text


async def test_metrics_count_fallbacks_and_errors(
    gateway: Make, fake_openai: FakeUpstream, fake_ollama: FakeUpstream
) -> None:
    from hybridfast import metrics

    before_err = metrics.ERRORS.values.get(("chat#0", "503", "ERR_UPSTREAM"), 0)
    before_ok = metrics.REQUESTS.values.get(("chat", "chat#1", "200", "", "miss"), 0)
    fake_openai.fail(503, times=1)
    h = await gateway(fake_config(fake_openai, fake_ollama))
    assert (await h.openai()).status == 200
    assert metrics.ERRORS.values[("chat#0", "503", "ERR_UPSTREAM")] == before_err + 1
    assert metrics.REQUESTS.values[("chat", "chat#1", "200", "", "miss")] == before_ok + 1
    text = await (await h.client.get("/metrics")).text()
    assert 'hybridfast_errors_total{code="ERR_UPSTREAM",deployment="chat#0",status="503"}' in text
    assert (
        'hybridfast_request_tokens_total{cache="miss",deployment="chat#1",direction="output"}'
        in text
    )


async def test_cache_replay_left_early_is_still_recorded(
    gateway: Make, fake_openai: FakeUpstream
) -> None:
    answer = ChatAnswer(content="cached " * 50, deployment="chat#0", cost=5)
    cache = RecordingCache(hits={"Say something short.": CacheHit(answer, "hit")})
    h = await gateway(fake_config(fake_openai), cache=cache)
    events = h.gateway.stream_events(
        h.gateway.request("Say something short.", model="chat", stream=True)
    )
    assert (await anext(events))[0].text
    await events.aclose()  # the client went away after the first piece
    (record,) = h.ledger.records
    assert record.status == 499
    assert record.cache == "hit"
    assert record.saved_cost == 5


async def test_a_streams_last_event_goes_out_with_the_end_of_the_body(
    gateway: Make, fake_openai: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One write fewer per stream: the final event (with the exact cost) and the chunked
    # body's terminator leave in the same send, not one after the other.
    from aiohttp import web

    ends: list[bytes] = []
    write_eof = web.StreamResponse.write_eof

    async def recording(self: web.StreamResponse, data: bytes = b"") -> None:
        ends.append(bytes(data))
        await write_eof(self, data)

    monkeypatch.setattr(web.StreamResponse, "write_eof", recording)
    h = await gateway(fake_config(fake_openai))
    resp = await h.openai(stream=True, max_tokens=50)
    assert resp.status == 200
    events = sse_data(await resp.text())
    assert events[-1] == "[DONE]"
    # (The fake upstream runs in this process too: its own ends are recorded as well.)
    (last,) = [data for data in ends if b"x_hybridfast" in data]
    assert last.endswith(b"data: [DONE]\n\n")


async def test_a_streams_head_goes_out_with_its_first_events(
    gateway: Make, fake_openai: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The head and the first events in one send: a head sent alone costs a send and a
    # wake-up of the client before there is anything to read.
    from aiohttp import http_writer

    sends: list[bytes] = []
    write, writelines = http_writer.StreamWriter._write, http_writer.StreamWriter._writelines

    def one(self: Any, chunk: Any) -> None:
        sends.append(bytes(chunk))
        write(self, chunk)

    def lines(self: Any, chunks: Any) -> None:
        sends.append(b"".join(bytes(c) for c in chunks))
        writelines(self, chunks)

    monkeypatch.setattr(http_writer.StreamWriter, "_write", one)
    monkeypatch.setattr(http_writer.StreamWriter, "_writelines", lines)
    h = await gateway(fake_config(fake_openai))
    resp = await h.openai(stream=True, max_tokens=50)
    assert resp.status == 200
    await resp.read()
    # (The fake upstream runs in this process too; its sends carry no x-hybridfast head.)
    (head,) = [data for data in sends if b"x-hybridfast-request-id" in data]
    assert b"data: {" in head
