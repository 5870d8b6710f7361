"""A whole (not streamed) chat answer is awaited through the fallback loop, not iterated: no
async generator on its way (each costs the event loop's bookkeeping), and the same rules as a
stream: fallback on an upstream failure, one ledger line, a hook that asks for a stream gets
the whole answer collected from it."""

from __future__ import annotations

import sys
from typing import Any

import msgspec

import hybridfast
from hybridfast.config import parse_config
from hybridfast.pipeline.context import RequestContext
from hybridfast.pipeline.hooks import PipelineRequest
from hybridfast.types import ChatRequest
from tests.conftest import fake_config
from tests.fakes import DEFAULT_REPLY, FakeUpstream
from tests.fakes.parts import RecordingLedger

HELLO = [{"role": "user", "content": "Hello"}]


async def test_a_whole_answer_makes_no_async_generator(
    fake_openai: FakeUpstream, fake_ollama: FakeUpstream
) -> None:
    config = parse_config(fake_config(fake_openai, fake_ollama)).config
    ledger = RecordingLedger()
    async with hybridfast.Gateway(config, ledger=ledger) as gw:
        await gw.complete(ChatRequest(model="chat", messages=HELLO))  # warm: pools, imports
        made: list[Any] = []
        hooks = sys.get_asyncgen_hooks()
        sys.set_asyncgen_hooks(firstiter=lambda agen: made.append(agen), finalizer=None)
        try:
            ctx = RequestContext("chat")
            answer = await gw.complete(ChatRequest(model="chat", messages=HELLO), ctx)
            fake_openai.fail(503)  # the fallback path too
            ctx2 = RequestContext("chat")
            again = await gw.complete(ChatRequest(model="chat", messages=HELLO), ctx2)
        finally:
            sys.set_asyncgen_hooks(*hooks)
        assert [getattr(a, "__qualname__", a) for a in made] == []
        assert answer.content == again.content == DEFAULT_REPLY
        assert (ctx.deployment_id, ctx2.deployment_id, ctx2.fallbacks) == ("chat#0", "chat#1", 1)
        assert [r.deployment for r in ledger.records[-2:]] == ["chat#0", "chat#1"]
        assert ledger.records[-1].cost == again.cost == ctx2.cost > 0


async def test_a_hook_asking_for_a_stream_gets_the_whole_answer_collected(
    fake_openai: FakeUpstream,
) -> None:
    config = parse_config(fake_config(fake_openai)).config
    ledger = RecordingLedger()
    async with hybridfast.Gateway(config, ledger=ledger) as gw:

        async def streamed(ctx: RequestContext, request: PipelineRequest) -> PipelineRequest:
            return msgspec.structs.replace(request, stream=True)

        gw.hooks.add("before_route", streamed, name="test-streamed")
        ctx = RequestContext("chat")
        answer = await gw.complete(ChatRequest(model="chat", messages=HELLO), ctx)
        assert answer.content == DEFAULT_REPLY
        assert answer.usage.output_tokens > 0
        assert answer.cost == ctx.cost == ledger.records[-1].cost > 0
        assert ledger.records[-1].status == 200
        assert fake_openai.requests[-1].body["stream"] is True
