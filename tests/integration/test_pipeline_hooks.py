"""The pipeline's seams over HTTP: hooks see every request, a failing hook is isolated and
counted (never a 500), a hook's 4xx refusal reaches the client in its protocol's shape and
changes nothing, a before_route hook may rewrite the request, attempt hooks see fallbacks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import pytest
from aiohttp.test_utils import TestClient

from hybridfast.config import parse_config
from hybridfast.errors import RateLimited
from hybridfast.pipeline.context import RequestContext
from hybridfast.pipeline.gateway import Gateway
from hybridfast.pipeline.hooks import Attempt, Hooks, PipelineAnswer, PipelineRequest, hook_failures
from hybridfast.server.app import create_app
from hybridfast.types import ChatAnswer, ChatRequest
from tests.conftest import fake_config
from tests.fakes import FakeUpstream
from tests.fakes.parts import RecordingCache, RecordingLedger

Start = Callable[[str, Hooks], Awaitable[tuple[TestClient, RecordingLedger]]]
CHAT = {"model": "chat", "messages": [{"role": "user", "content": "Say something short."}]}


@pytest.fixture
def start(aiohttp_client: Any) -> Start:
    async def make(config_text: str, hooks: Hooks) -> tuple[TestClient, RecordingLedger]:
        config = parse_config(config_text).config
        ledger = RecordingLedger()
        gw = Gateway(config, ledger=ledger, cache=RecordingCache(), hooks=hooks)
        client = await aiohttp_client(create_app(config, gateway=gw))
        return client, ledger

    return make


async def test_a_failing_hook_is_isolated_and_counted(
    start: Start, fake_openai: FakeUpstream
) -> None:
    hooks = Hooks()

    async def broken(ctx: RequestContext, request: PipelineRequest) -> None:
        raise RuntimeError("a bug in a plugin")

    async def broken_after(
        ctx: RequestContext, request: PipelineRequest, answer: PipelineAnswer | None
    ) -> None:
        raise KeyError("another")

    hooks.add("before_route", broken, name="test-broken")
    hooks.add("after_answer", broken_after, name="test-broken-after")
    before = hook_failures()
    client, ledger = await start(fake_config(fake_openai), hooks)
    resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status == 200
    after = hook_failures()
    assert (
        after[("before_route", "test-broken")] == before.get(("before_route", "test-broken"), 0) + 1
    )
    key = ("after_answer", "test-broken-after")
    assert after[key] == before.get(key, 0) + 1
    assert [r.status for r in ledger.records] == [200]


@pytest.mark.parametrize(
    ("path", "body", "shape"),
    [
        ("/v1/chat/completions", CHAT, "openai"),
        ("/v1/messages", {**CHAT, "max_tokens": 50}, "anthropic"),
    ],
)
async def test_a_hook_refusal_reaches_the_client_and_changes_nothing(
    start: Start, fake_openai: FakeUpstream, path: str, body: dict[str, Any], shape: str
) -> None:
    hooks = Hooks()
    ended: list[int] = []

    @hooks.before_route
    async def limit(ctx: RequestContext, request: PipelineRequest) -> None:
        raise RateLimited("too many requests for this key", headers={"Retry-After": "3"})

    @hooks.after_answer
    async def log(
        ctx: RequestContext, request: PipelineRequest, answer: PipelineAnswer | None
    ) -> None:
        ended.append(ctx.status)

    client, ledger = await start(fake_config(fake_openai), hooks)
    resp = await client.post(path, json=body)
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "3"
    error = (await resp.json())["error"]
    assert error["code"] == "ERR_RATE_LIMITED"
    if shape == "anthropic":
        assert error["type"] == "rate_limit_error"
    assert fake_openai.calls == 0
    assert ledger.reserved == []
    assert ledger.records == []
    assert ended == [429]


async def test_a_before_route_hook_rewrites_the_request(
    start: Start, fake_openai: FakeUpstream
) -> None:
    hooks = Hooks()

    @hooks.before_route
    async def template(ctx: RequestContext, request: PipelineRequest) -> PipelineRequest | None:
        if not isinstance(request, ChatRequest):
            return None
        system = {"role": "system", "content": "Answer in French."}
        return msgspec.structs.replace(request, messages=[system, *request.messages])

    client, _ = await start(fake_config(fake_openai), hooks)
    resp = await client.post("/v1/chat/completions", json=CHAT)
    assert resp.status == 200
    sent = fake_openai.requests[-1].body
    assert sent["messages"][0] == {"role": "system", "content": "Answer in French."}


async def test_attempt_hooks_see_each_attempt_and_after_answer_the_answer(
    start: Start, fake_openai: FakeUpstream, fake_anthropic: FakeUpstream
) -> None:
    hooks = Hooks()
    started: list[str] = []
    ended: list[tuple[str, str, int | None]] = []
    answers: list[Any] = []

    @hooks.attempt_start
    async def on_start(ctx: RequestContext, attempt: Attempt) -> None:
        started.append(attempt.deployment.id)
        ctx.response_headers["x-test-attempts"] = str(len(started))

    @hooks.attempt_end
    async def on_end(ctx: RequestContext, attempt: Attempt) -> None:
        ended.append((attempt.deployment.id, attempt.outcome, attempt.upstream_status))

    @hooks.after_answer
    async def on_answer(
        ctx: RequestContext, request: PipelineRequest, answer: PipelineAnswer | None
    ) -> None:
        answers.append((ctx.status, ctx.deployment_id, answer))

    fake_openai.fail(503, times=1)
    client, _ = await start(fake_config(fake_openai, fake_anthropic), hooks)
    resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert resp.status == 200
    await resp.read()
    assert started == ["chat#0", "chat#1"]
    assert ended == [("chat#0", "failed", 503), ("chat#1", "ok", None)]
    assert resp.headers["x-test-attempts"] == "2"
    ((status, deployment, answer),) = answers
    assert (status, deployment) == (200, "chat#1")
    assert isinstance(answer, ChatAnswer)
    assert answer.content  # the stream, assembled
