"""The Anthropic Messages API on both sides: a client's request into the gateway's own
(OpenAI-shaped) form and answers back, and the gateway's form into an upstream request.

Usage semantics differ: Anthropic's `input_tokens` excludes the cache-read and cache-write
parts; the gateway's `Usage.input_tokens` is the whole prompt. The conversions here are the
only place that knows.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from hybridfast.errors import GatewayError, InvalidRequest
from hybridfast.protocols.common import (
    check_number,
    check_stop,
    parse_cache_control,
    read_json_object,
)
from hybridfast.types import ChatAnswer, ChatRequest, Usage

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

_KNOWN = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "tools",
        "tool_choice",
        "metadata",
        "cache",
    }
)


# --- client request → gateway form -----------------------------------------------------


def _image_part(block: dict[str, Any]) -> dict[str, Any]:
    src = block.get("source") or {}
    if src.get("type") == "base64":
        url = f"data:{src.get('media_type', 'image/png')};base64,{src.get('data', '')}"
    elif src.get("type") == "url":
        url = str(src.get("url", ""))
    else:
        raise InvalidRequest("an image block needs a base64 or url source")
    return {"type": "image_url", "image_url": {"url": url}}


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"
        )
    return ""


def messages_from_anthropic(system: Any, messages: list[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if system:
        if not isinstance(system, str | list):
            raise InvalidRequest("`system` must be a string or a list of text blocks")
        out.append({"role": "system", "content": _text_of(system)})
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise InvalidRequest(f"messages[{i}] must be an object")
        role = m.get("role")
        if role not in ("user", "assistant"):
            raise InvalidRequest(f"messages[{i}].role must be 'user' or 'assistant'")
        content = m.get("content")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
            continue
        if not isinstance(content, list):
            raise InvalidRequest(f"messages[{i}].content must be a string or a list of blocks")
        parts: list[dict[str, Any]] = []
        tool_calls: list[dict[str, Any]] = []
        tool_results: list[dict[str, Any]] = []
        for j, block in enumerate(content):
            if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                raise InvalidRequest(f"messages[{i}].content[{j}] must be a typed block")
            kind = block["type"]
            if kind == "text":
                if not isinstance(block.get("text"), str):
                    raise InvalidRequest(f"messages[{i}].content[{j}].text must be a string")
                parts.append({"type": "text", "text": block["text"]})
            elif kind == "image":
                parts.append(_image_part(block))
            elif kind == "tool_use":
                tool_calls.append(
                    {
                        "id": block.get("id"),
                        "type": "function",
                        "function": {
                            "name": block.get("name", ""),
                            "arguments": orjson.dumps(block.get("input") or {}).decode(),
                        },
                    }
                )
            elif kind == "tool_result":
                tool_results.append(
                    {
                        "role": "tool",
                        "tool_call_id": block.get("tool_use_id"),
                        "content": _text_of(block.get("content")),
                    }
                )
            elif kind in ("thinking", "redacted_thinking"):
                continue  # reasoning traces do not travel between providers
            else:
                raise InvalidRequest(f"messages[{i}].content[{j}]: unsupported block {kind!r}")
        out.extend(tool_results)
        if parts or tool_calls:
            msg: dict[str, Any] = {"role": role}
            if all(p["type"] == "text" for p in parts):
                msg["content"] = "".join(p["text"] for p in parts) if parts else None
            else:
                msg["content"] = parts
            if tool_calls:
                msg["tool_calls"] = tool_calls
            out.append(msg)
    return out


def tools_from_anthropic(tools: Any) -> list[dict[str, Any]] | None:
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise InvalidRequest("`tools` must be a list")
    out = []
    for i, t in enumerate(tools):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise InvalidRequest(f"tools[{i}] needs a name")
        fn: dict[str, Any] = {
            "name": t["name"],
            "parameters": t.get("input_schema") or {"type": "object"},
        }
        if t.get("description"):
            fn["description"] = t["description"]
        out.append({"type": "function", "function": fn})
    return out


def tool_choice_from_anthropic(choice: Any) -> Any:
    if not isinstance(choice, dict):
        return None
    kind = choice.get("type")
    if kind == "auto":
        return "auto"
    if kind == "any":
        return "required"
    if kind == "none":
        return "none"
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.get("name", "")}}
    return None


def parse_request(raw: bytes, headers: Any = None) -> ChatRequest:
    """A Messages API body into the gateway's form; `InvalidRequest` names what is wrong."""
    body = read_json_object(raw)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("`model` must be a non-empty string")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("`messages` must be a non-empty list")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise InvalidRequest("`max_tokens` is required and must be a positive integer")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("`stream` must be a boolean")
    metadata = body.get("metadata") or {}
    user = metadata.get("user_id") if isinstance(metadata, dict) else None
    extra = {}
    if body.get("top_k") is not None:
        extra["top_k"] = body["top_k"]
    return ChatRequest(
        model=model,
        messages=messages_from_anthropic(body.get("system"), messages),
        stream=stream,
        max_tokens=max_tokens,
        temperature=check_number(body, "temperature", 0.0, 1.0),
        top_p=check_number(body, "top_p", 0.0, 1.0),
        stop=check_stop(body.get("stop_sequences"), "stop_sequences"),
        tools=tools_from_anthropic(body.get("tools")),
        tool_choice=tool_choice_from_anthropic(body.get("tool_choice")),
        user=user if isinstance(user, str) else None,
        include_usage=True,
        extra=extra,
        cache_control=parse_cache_control(body.get("cache"), headers),
    )


# --- gateway form → upstream request ---------------------------------------------------


def _content_blocks(content: Any) -> list[dict[str, Any]]:
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
            system.append(_text_of(m.get("content")))
        elif role == "tool":
            add(
                "user",
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": m.get("tool_call_id", ""),
                        "content": _text_of(m.get("content")),
                    }
                ],
            )
        elif role == "assistant":
            blocks = _content_blocks(m.get("content"))
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
            add("user", _content_blocks(m.get("content")))
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


# --- gateway answer → client -----------------------------------------------------------


def _usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens - usage.cached_input_tokens - usage.cache_write_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_input_tokens,
        "output_tokens": usage.output_tokens,
    }


def answer_body(answer: ChatAnswer, request_id: str, model: str, meta: dict[str, Any]) -> bytes:
    content: list[dict[str, Any]] = []
    if answer.content:
        content.append({"type": "text", "text": answer.content})
    for call in answer.tool_calls:
        fn = call.get("function") or {}
        try:
            args = orjson.loads(fn.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            args = {}
        content.append(
            {"type": "tool_use", "id": call.get("id") or "", "name": fn.get("name"), "input": args}
        )
    return orjson.dumps(
        {
            "id": f"msg_{request_id}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": FINISH_TO_STOP.get(answer.finish_reason, "end_turn"),
            "stop_sequence": None,
            "usage": _usage_json(answer.usage),
            "x_hybridfast": meta,
        }
    )


def _event(name: bytes, data: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class StreamEncoder:
    """Gateway stream events into Anthropic's SSE sequence: message_start,
    content_block_start/delta/stop per block, message_delta (with usage), message_stop."""

    content_type = "text/event-stream; charset=utf-8"

    def __init__(self, request_id: str, model: str, input_tokens: int) -> None:
        self.request_id = request_id
        self.model = model
        self.input_tokens = input_tokens
        self.block = -1  # index of the open block (-1: none)
        self.block_kind = ""
        self.tool_blocks: dict[int, int] = {}  # tool-call index → block index
        self.finish = "stop"

    def start(self) -> bytes:
        return _event(
            b"message_start",
            {
                "type": "message_start",
                "message": {
                    "id": f"msg_{self.request_id}",
                    "type": "message",
                    "role": "assistant",
                    "model": self.model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": self.input_tokens, "output_tokens": 1},
                },
            },
        )

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close()
        self.block += 1
        self.block_kind = kind
        return out + _event(
            b"content_block_start",
            {"type": "content_block_start", "index": self.block, "content_block": block},
        )

    def _close(self) -> bytes:
        if self.block_kind:
            self.block_kind = ""
            return _event(
                b"content_block_stop", {"type": "content_block_stop", "index": self.block}
            )
        return b""

    def events(self, events: list[Any]) -> bytes:
        out = b""
        for ev in events:
            if ev.text:
                if self.block_kind != "text":
                    out += self._open("text", {"type": "text", "text": ""})
                out += _event(
                    b"content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": self.block,
                        "delta": {"type": "text_delta", "text": ev.text},
                    },
                )
            if ev.tool_calls:
                for call in ev.tool_calls:
                    idx = call.get("index", 0)
                    if idx not in self.tool_blocks:
                        out += self._open(
                            f"tool{idx}",
                            {
                                "type": "tool_use",
                                "id": call.get("id") or f"toolu_{self.request_id}_{idx}",
                                "name": call.get("name") or "",
                                "input": {},
                            },
                        )
                        self.tool_blocks[idx] = self.block
                    if call.get("arguments"):
                        out += _event(
                            b"content_block_delta",
                            {
                                "type": "content_block_delta",
                                "index": self.tool_blocks[idx],
                                "delta": {
                                    "type": "input_json_delta",
                                    "partial_json": call["arguments"],
                                },
                            },
                        )
            if ev.finish_reason:
                self.finish = ev.finish_reason
        return out

    def end(self, usage: Usage, meta: dict[str, Any], include_usage: bool) -> bytes:
        out = self._close()
        u = _usage_json(usage)
        out += _event(
            b"message_delta",
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": FINISH_TO_STOP.get(self.finish, "end_turn"),
                    "stop_sequence": None,
                },
                "usage": u,
                "x_hybridfast": meta,
            },
        )
        return out + _event(b"message_stop", {"type": "message_stop"})

    def error(self, err: GatewayError) -> bytes:
        return _event(b"error", error_json(err))


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def error_json(err: GatewayError) -> dict[str, Any]:
    hint = f" (hint: {err.hint})" if err.hint else ""
    return {
        "type": "error",
        "error": {
            "type": _ERROR_TYPES.get(err.status, "api_error"),
            "message": f"{err.message}{hint}",
            "code": err.code,
        },
    }


def error_body(err: GatewayError) -> bytes:
    return orjson.dumps(error_json(err))


def created() -> int:
    return int(time.time())
