"""OpenAI's Responses API (`POST /v1/responses`) as the fake OpenAI upstream speaks it: the
`response` object, and the streamed event sequence with `event:` lines and sequence numbers
(response.created, response.in_progress, output_item.added, content_part.added,
output_text.delta..., output_text.done, content_part.done, output_item.done,
response.completed with usage), function calls with their argument deltas. It answers from
the fake's switches (`reply`, `chunks`, `tool_call`, `usage`) and records the request like
every other endpoint."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

if TYPE_CHECKING:
    from tests.fakes.upstream import FakeUpstream


def split_reply(text: str, n: int) -> list[str]:
    """`text` in `n` pieces that join back to it (as the chat fakes split their replies)."""
    n = max(1, min(n, len(text)))
    step, extra = divmod(len(text), n)
    pieces, at = [], 0
    for i in range(n):
        size = step + (1 if i < extra else 0)
        pieces.append(text[at : at + size])
        at += size
    return [p for p in pieces if p]


def _usage(prompt: int, out: int, cached: int) -> dict[str, Any]:
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": out,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + out,
    }


def _response(body: dict[str, Any], rid: str, model: str, status: str) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": model,
        "output": [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": body.get("store", True),
        "temperature": 1.0,
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": body.get("tools") or [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": None,
        "user": None,
        "metadata": {},
    }


def _tool_call(fake: FakeUpstream, body: dict[str, Any]) -> dict[str, Any] | None:
    """The `tool_call` switch, unless an agent loop just sent the tool's output back."""
    s = fake.switches
    items = body.get("input")
    last = items[-1] if isinstance(items, list) and items else None
    if (
        s.answer_tool_results
        and isinstance(last, dict)
        and last.get("type") == "function_call_output"
    ):
        return None
    return s.tool_call


def _items(fake: FakeUpstream, body: dict[str, Any], n: int) -> list[dict[str, Any]]:
    s = fake.switches
    tool_call = _tool_call(fake, body)
    if tool_call:
        return [
            {
                "id": f"fc_fake{n:08d}",
                "type": "function_call",
                "status": "completed",
                "arguments": orjson.dumps(tool_call.get("arguments", {})).decode(),
                "call_id": "call_fake0001",
                "name": tool_call["name"],
            }
        ]
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": s.reply}
    message = {
        "id": f"msg_fake{n:08d}",
        "type": "message",
        "status": "completed",
        "content": [part],
        "role": "assistant",
    }
    return [message]


async def openai_responses(fake: FakeUpstream, request: web.Request) -> web.StreamResponse:
    body = await fake._receive(request)
    status = fake._should_fail()
    if status is not None:
        return fake._openai_error(status)
    if not isinstance(body, dict) or not body.get("model") or "input" not in body:
        return fake._openai_error(400)
    s = fake.switches
    await fake._pause(s.first_byte_s)
    rid = f"resp_fake{fake.calls:08d}"
    model = fake._model(body)
    prompt, out, cached, _ = fake._usage(body, s.reply)
    items = _items(fake, body, fake.calls)
    if not body.get("stream"):
        answer = _response(body, rid, model, "completed")
        answer["output"] = items
        answer["usage"] = None if s.no_usage else _usage(prompt, out, cached)
        return web.Response(body=orjson.dumps(answer), content_type="application/json")
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
    )
    await resp.prepare(request)
    sequence = iter(range(1 << 30))

    def event(kind: str, data: dict[str, Any]) -> bytes:
        data = {"type": kind, "sequence_number": next(sequence), **data}
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    head = _response(body, rid, model, "in_progress")
    await resp.write(event("response.created", {"response": head}))
    await resp.write(event("response.in_progress", {"response": head}))
    item = items[0]
    if item["type"] == "function_call":
        added = {**item, "status": "in_progress", "arguments": ""}
        await resp.write(event("response.output_item.added", {"output_index": 0, "item": added}))
        for piece in split_reply(item["arguments"], 3):
            await fake._pause(s.per_chunk_s)
            delta = {"item_id": item["id"], "output_index": 0, "delta": piece}
            await resp.write(event("response.function_call_arguments.delta", delta))
        done = {"item_id": item["id"], "output_index": 0, "arguments": item["arguments"]}
        await resp.write(event("response.function_call_arguments.done", done))
    else:
        added = {**item, "status": "in_progress", "content": []}
        await resp.write(event("response.output_item.added", {"output_index": 0, "item": added}))
        where = {"item_id": item["id"], "output_index": 0, "content_index": 0}
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
        await resp.write(event("response.content_part.added", {**where, "part": part}))
        for piece in split_reply(s.reply, s.chunks):
            await fake._pause(s.per_chunk_s)
            delta = {**where, "delta": piece, "logprobs": []}
            await resp.write(event("response.output_text.delta", delta))
        done = {**where, "text": s.reply, "logprobs": []}
        await resp.write(event("response.output_text.done", done))
        await resp.write(event("response.content_part.done", {**where, "part": item["content"][0]}))
    await resp.write(event("response.output_item.done", {"output_index": 0, "item": item}))
    final = _response(body, rid, model, "completed")
    final["output"] = items
    final["usage"] = None if s.no_usage else _usage(prompt, out, cached)
    await resp.write(event("response.completed", {"response": final}))
    await resp.write_eof()
    return resp
