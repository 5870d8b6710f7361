"""Provider adapters on their own, against the fake upstreams: embeddings, retries that
honour Retry-After, timeouts, and the events a stream becomes."""

from __future__ import annotations

import time

import pytest

from hybridfast.config import ProviderConfig, TimeoutConfig, parse_config
from hybridfast.deployments import build_deployments
from hybridfast.providers import ProviderError, build_provider
from hybridfast.types import ChatRequest, Deployment
from tests.conftest import fake_config
from tests.fakes import DEFAULT_REPLY, FakeUpstream
from tests.fakes.upstream import fake_embedding


def deployment(fake: FakeUpstream, kind: str | None = None) -> Deployment:
    text = fake_config(fake)
    if kind:
        text = text.replace(f"kind: {fake.kind}", f"kind: {kind}")
    return build_deployments(parse_config(text).config)[0]


def provider(fake: FakeUpstream, kind: str | None = None, **kw: object) -> object:
    return build_provider(
        ProviderConfig(name="p0", kind=kind or fake.kind, base_url=fake.url, api_key="k", **kw)  # type: ignore[arg-type]
    )


REQ = ChatRequest(model="chat", messages=[{"role": "user", "content": "hello"}])


@pytest.mark.parametrize("kind", ["openai", "openai-compatible", "ollama"])
async def test_embed(kind: str, request: pytest.FixtureRequest) -> None:
    fake: FakeUpstream = request.getfixturevalue(
        "fake_ollama" if kind == "ollama" else "fake_openai"
    )
    p = provider(fake, kind)
    try:
        vectors, usage = await p.embed(deployment(fake, kind), ["a cat", "a dog"], dimensions=16)  # type: ignore[attr-defined]
    finally:
        await p.close()  # type: ignore[attr-defined]
    assert len(vectors) == 2
    assert vectors[0] == pytest.approx(fake_embedding("a cat", 16), abs=1e-6)
    assert usage.input_tokens > 0
    sent = fake.requests[-1].body
    assert sent["dimensions"] == 16
    assert sent["input"] == ["a cat", "a dog"]
    if kind != "ollama":
        assert sent["encoding_format"] == "base64"


async def test_embed_token_arrays(fake_openai: FakeUpstream) -> None:
    p = provider(fake_openai)
    try:
        vectors, _ = await p.embed(deployment(fake_openai), [[1, 2, 3]], dimensions=None)  # type: ignore[attr-defined]
    finally:
        await p.close()  # type: ignore[attr-defined]
    assert len(vectors[0]) == fake_openai.dimensions


@pytest.mark.parametrize("client", ["fast", "aiohttp"])
async def test_retries_honour_retry_after(fake_openai: FakeUpstream, client: str) -> None:
    fake_openai.fail(429, times=1, retry_after=0.2)
    p = provider(fake_openai, http_client=client)
    start = time.monotonic()
    try:
        answer = await p.chat(deployment(fake_openai), REQ, retries=1)  # type: ignore[attr-defined]
    finally:
        await p.close()  # type: ignore[attr-defined]
    assert answer.content == DEFAULT_REPLY
    assert fake_openai.calls == 2
    assert time.monotonic() - start >= 0.2  # it waited as told (a lower bound, not a timing)


async def test_no_retry_when_told_to_wait_long(fake_anthropic: FakeUpstream) -> None:
    fake_anthropic.fail(429, times=1, retry_after=30)
    p = provider(fake_anthropic)
    try:
        with pytest.raises(ProviderError) as failed:
            await p.chat(deployment(fake_anthropic), REQ, retries=3)  # type: ignore[attr-defined]
    finally:
        await p.close()  # type: ignore[attr-defined]
    assert failed.value.status == 429
    assert failed.value.retry_after == 30
    assert fake_anthropic.calls == 1


async def test_client_errors_are_not_retried(fake_ollama: FakeUpstream) -> None:
    fake_ollama.fail(404, times=5)
    p = provider(fake_ollama)
    try:
        with pytest.raises(ProviderError) as failed:
            await p.chat(deployment(fake_ollama), REQ, retries=3)  # type: ignore[attr-defined]
    finally:
        await p.close()  # type: ignore[attr-defined]
    assert failed.value.client_fault
    assert fake_ollama.calls == 1
    assert "k" not in failed.value.message.split()  # the key is never in a message


@pytest.mark.parametrize("client", ["fast", "aiohttp"])
async def test_first_byte_timeout(fake_openai: FakeUpstream, client: str) -> None:
    fake_openai.latency(first_byte_s=2.0)
    p = provider(fake_openai, timeout=TimeoutConfig(first_byte_s=0.1), http_client=client)
    try:
        with pytest.raises(ProviderError) as failed:
            await p.chat(deployment(fake_openai), REQ)  # type: ignore[attr-defined]
    finally:
        await p.close()  # type: ignore[attr-defined]
    assert "timed out" in failed.value.message


@pytest.mark.parametrize("kind", ["openai", "anthropic", "ollama"])
@pytest.mark.parametrize("client", ["fast", "aiohttp"])
async def test_stream_tool_call_events(
    kind: str, client: str, request: pytest.FixtureRequest
) -> None:
    fake: FakeUpstream = request.getfixturevalue(f"fake_{kind}")
    fake.set(tool_call={"name": "f", "arguments": {"x": [1, 2]}})
    p = provider(fake, http_client=client)
    events = []
    try:
        async for batch in p.stream(deployment(fake), REQ):  # type: ignore[attr-defined]
            events.extend(batch)
    finally:
        await p.close()  # type: ignore[attr-defined]
    deltas = [c for e in events if e.tool_calls for c in e.tool_calls]
    assert deltas[0]["name"] == "f"
    assert "".join(d["arguments"] for d in deltas) == '{"x":[1,2]}'
    assert events[-1].finish_reason == "tool_calls" or any(
        e.finish_reason == "tool_calls" for e in events
    )
    assert any(e.usage is not None for e in events)
