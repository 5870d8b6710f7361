"""`n` > 1 (several answers to one request) on upstreams that give one answer per call:
the request is sent `n` times at once, each call is charged (the usages add up), and the
answers after the first travel in `ChatAnswer.extra["choices"]` as Chat Completions choices.
OpenAI-compatible upstreams get `n` itself."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from hybridfast.types import ChatAnswer, ChatRequest, Usage

# The most answers one request may ask for.
MAX_N = 8


def requested_n(request: ChatRequest) -> int:
    n = request.extra.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1


def choice_json(answer: ChatAnswer, index: int) -> dict[str, Any]:
    """An answer as the `index`-th Chat Completions choice."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": answer.content if answer.content or not answer.tool_calls else None,
        "refusal": None,
    }
    if answer.tool_calls:
        message["tool_calls"] = answer.tool_calls
    message.update(answer.extra.get("message") or {})
    return {
        "index": index,
        "message": message,
        "logprobs": (answer.extra.get("choice") or {}).get("logprobs"),
        "finish_reason": answer.finish_reason,
    }


async def fan_out(
    one: Callable[[ChatRequest], Awaitable[ChatAnswer]], request: ChatRequest, n: int
) -> ChatAnswer:
    """`n` calls of `one` at once, as one answer with `n` choices and their summed usage."""
    single = msgspec.structs.replace(
        request, extra={k: v for k, v in request.extra.items() if k != "n"}
    )
    answers = await asyncio.gather(*(one(single) for _ in range(n)))
    first = answers[0]
    usages = [a.usage for a in answers]
    first.usage = Usage(
        input_tokens=sum(u.input_tokens for u in usages),
        output_tokens=sum(u.output_tokens for u in usages),
        cached_input_tokens=sum(u.cached_input_tokens for u in usages),
        cache_write_tokens=sum(u.cache_write_tokens for u in usages),
        reasoning_tokens=sum(u.reasoning_tokens for u in usages),
        estimated=any(u.estimated for u in usages),
    )
    others = [choice_json(a, i) for i, a in enumerate(answers[1:], 1)]
    first.extra = {**first.extra, "choices": others}
    return first
