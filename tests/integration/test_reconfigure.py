"""`Gateway.reconfigure(config)`: a running gateway switches to a new config — new requests
route over the new deployments, a stream in flight finishes on the provider it started with,
unchanged providers keep their connections, a config the router refuses changes nothing,
and the config's budgets follow it."""

from __future__ import annotations

import asyncio

import pytest

from hybridfast.config import parse_config
from hybridfast.errors import ConfigError, ModelNotFound
from hybridfast.pipeline.gateway import Gateway
from tests.conftest import fake_config
from tests.fakes.upstream import DEFAULT_REPLY, FakeUpstream


async def test_new_requests_use_the_new_deployments(
    fake_openai: FakeUpstream, fake_ollama: FakeUpstream
) -> None:
    first = parse_config(fake_config(fake_openai, name="a")).config
    second = parse_config(fake_config(fake_openai, fake_ollama, name="b")).config
    async with Gateway(first) as gw:
        assert (await gw.chat("hi", model="a")).text == DEFAULT_REPLY
        kept = gw.providers["p0"]
        await gw.reconfigure(second)
        with pytest.raises(ModelNotFound):
            await gw.chat("hi", model="a")
        answer = await gw.chat("hi", model="b")
        assert answer.text == DEFAULT_REPLY
        assert gw.providers["p0"] is kept  # same settings: same connections
        assert {d.name for d in gw.deployments} == {"b"}


async def test_a_stream_in_flight_finishes_on_the_old_provider(
    fake_openai: FakeUpstream, fake_ollama: FakeUpstream
) -> None:
    fake_openai.set(chunks=6).latency(per_chunk_s=0.05)
    before = parse_config(fake_config(fake_openai, name="chat")).config
    after = parse_config(fake_config(fake_ollama, name="chat")).config
    async with Gateway(before) as gw:
        stream = gw.stream("hi", model="chat")
        pieces = stream.__aiter__()
        first = await anext(pieces)
        await gw.reconfigure(after)  # p0 is now Ollama: the OpenAI provider is retired
        rest = [event.text async for event in pieces if event.text]
        assert (first.text or "") + "".join(rest) == DEFAULT_REPLY
        assert stream.info.deployment_id == "chat#0"
        assert fake_openai.cancelled == 0
        assert (await gw.chat("again", model="chat")).text == DEFAULT_REPLY
        assert fake_ollama.requests[-1].path == "/api/chat"


async def test_a_config_the_router_refuses_changes_nothing(fake_openai: FakeUpstream) -> None:
    good = parse_config(fake_config(fake_openai, name="a")).config
    bad = parse_config(
        fake_config(fake_openai, name="b", extra="router: {group_strategy: weighted}\n")
    ).config
    async with Gateway(good) as gw:
        with pytest.raises(ConfigError):
            await gw.reconfigure(bad)
        assert gw.config is good
        assert (await gw.chat("hi", model="a")).text == DEFAULT_REPLY


async def test_budgets_follow_the_config(fake_openai: FakeUpstream) -> None:
    budget = "budgets:\n  - {scope: global, window: day, limit_usd: 5}\n"
    plain = parse_config(fake_config(fake_openai)).config
    limited = parse_config(fake_config(fake_openai, extra=budget)).config
    async with Gateway(plain) as gw:
        await gw.reconfigure(limited)
        limits = {(b.scope, b.window): b.limit for b in gw.ledger.budgets()}  # type: ignore[attr-defined]
        assert limits == {("global", "day"): 5 * 10**12}
        await gw.reconfigure(plain)
        assert gw.ledger.budgets() == []  # type: ignore[attr-defined]


async def test_closing_the_gateway_closes_retired_providers_at_once(
    fake_openai: FakeUpstream, fake_ollama: FakeUpstream
) -> None:
    gw = await Gateway(parse_config(fake_config(fake_openai)).config).open()
    await gw.chat("hi", model="chat")
    retired = gw.providers["p0"]
    closed: list[str] = []
    close = retired.close

    async def recording_close() -> None:
        closed.append(retired.name)
        await close()

    retired.close = recording_close  # type: ignore[method-assign]
    await gw.reconfigure(parse_config(fake_config(fake_ollama)).config)
    assert closed == []  # a call may still be using it
    await asyncio.wait_for(gw.close(), 10)  # does not wait out the grace period
    assert closed == [retired.name]
