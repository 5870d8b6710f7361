"""The Anthropic Messages wire format as an upstream speaks it: the gateway's (OpenAI-shaped)
request into an Anthropic body, Anthropic's usage and stop reasons back.

Usage semantics differ: Anthropic's `input_tokens` excludes the cache-read and cache-write
parts; the gateway's `Usage.input_tokens` is the whole prompt. The conversions here (and the
client-side ones in `protocols/anthropic.py`, which reuse these) are the only place that knows.
"""

from __future__ import annotations

from typing import Any

import orjson

from hybridfast.types import ChatRequest, Usage

STOP_TO_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
    "model_context_window_exceeded": "length",
}
FINISH_TO_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    "function_call": "tool_use",
}


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"
        )
    return ""


def content_blocks(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif kind == "image_url":
            url = (part.get("image_url") or {}).get("url", "")
            if url.startswith("data:") and ";base64," in url:
                media, data = url[5:].split(";base64,", 1)
                blocks.append(
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": media, "data": data},
                    }
                )
            else:
                blocks.append({"type": "image", "source": {"type": "url", "url": url}})
    return blocks


def to_upstream(
    request: ChatRequest, model: str, default_max_tokens: int, stream: bool
) -> dict[str, Any]:
    system: list[str] = []
    messages: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        # Anthropic wants alternating roles: consecutive same-role turns are merged.
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})

    for m in request.messages:
        role = m.get("role")
        if role in ("system", "developer"):
            system.append(text_of(m.get("content")))
        elif role == "tool":
            add(
                "user",
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": m.get("tool_call_id", ""),
                        "content": text_of(m.get("content")),
                    }
                ],
            )
        elif role == "assistant":
            blocks = content_blocks(m.get("content"))
            for call in m.get("tool_calls") or ():
                fn = call.get("function") or {}
                try:
                    args = orjson.loads(fn.get("arguments") or "{}")
                except orjson.JSONDecodeError:
                    args = {}
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call.get("id"),
                        "name": fn.get("name"),
                        "input": args,
                    }
                )
            add("assistant", blocks)
        else:
            add("user", content_blocks(m.get("content")))
    # A final assistant turn is a prefix to continue; Anthropic refuses trailing whitespace.
    if messages and messages[-1]["role"] == "assistant":
        last = messages[-1]["content"]
        if last and last[-1].get("type") == "text":
            last[-1]["text"] = last[-1]["text"].rstrip()
            if not last[-1]["text"]:
                last.pop()
        if not last:
            messages.pop()
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": request.max_tokens or default_max_tokens,
    }
    if system:
        body["system"] = "\n\n".join(s for s in system if s)
    if request.temperature is not None:
        body["temperature"] = min(1.0, request.temperature)
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop_sequences"] = request.stop
    if request.extra.get("top_k") is not None:
        body["top_k"] = request.extra["top_k"]
    if request.tools:
        body["tools"] = [
            {
                "name": (t.get("function") or {}).get("name", ""),
                "description": (t.get("function") or {}).get("description", ""),
                "input_schema": (t.get("function") or {}).get("parameters") or {"type": "object"},
            }
            for t in request.tools
        ]
        choice = request.tool_choice
        if choice == "required":
            body["tool_choice"] = {"type": "any"}
        elif choice == "none":
            body["tool_choice"] = {"type": "none"}
        elif isinstance(choice, dict):
            body["tool_choice"] = {
                "type": "tool",
                "name": (choice.get("function") or {}).get("name", ""),
            }
    if request.user:
        body["metadata"] = {"user_id": request.user}
    if stream:
        body["stream"] = True
    return body


def usage_from_anthropic(u: dict[str, Any] | None) -> Usage | None:
    if not u or "input_tokens" not in u:
        return None
    read = u.get("cache_read_input_tokens") or 0
    written = u.get("cache_creation_input_tokens") or 0
    return Usage(
        input_tokens=(u.get("input_tokens") or 0) + read + written,
        output_tokens=u.get("output_tokens") or 0,
        cached_input_tokens=read,
        cache_write_tokens=written,
    )
