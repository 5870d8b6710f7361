"""The Anthropic Messages API as clients speak it: a client's request into the gateway's own
(OpenAI-shaped) form, and answers, streams and errors back. The upstream side (the gateway's
form into an Anthropic body, usage and stop reasons) is `providers/anthropic_wire.py`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from hybridfast.errors import GatewayError, InvalidRequest
from hybridfast.passthrough import EXTENSION, attach
from hybridfast.pipeline.context import RequestContext
from hybridfast.protocols.common import (
    check_number,
    check_stop,
    parse_cache_control,
    read_json_object,
)
from hybridfast.providers.anthropic_wire import (
    FINISH_TO_STOP,
    STOP_TO_FINISH,
    text_of,
    to_upstream,
    usage_from_anthropic,
)
from hybridfast.types import ChatAnswer, ChatRequest, Usage

# Re-exported: the upstream side lives with the providers, the client side here.
__all__ = [
    "ANTHROPIC_MESSAGES",
    "STOP_TO_FINISH",
    "AnthropicMessages",
    "StreamEncoder",
    "to_upstream",
    "usage_from_anthropic",
]

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


def messages_from_anthropic(
    system: Any, messages: list[Any], untranslatable: list[str] | None = None
) -> list[dict[str, Any]]:
    """The messages in the gateway's form. Blocks it has no form for (documents, server-tool
    results...) are listed in `untranslatable` when given (they then reach only an Anthropic
    upstream, in the body passed through), else refused."""
    out: list[dict[str, Any]] = []
    if system:
        if not isinstance(system, str | list):
            raise InvalidRequest("`system` must be a string or a list of text blocks")
        out.append({"role": "system", "content": text_of(system)})
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
                        "content": text_of(block.get("content")),
                    }
                )
            elif kind in ("thinking", "redacted_thinking"):
                continue  # reasoning traces do not travel between providers
            elif untranslatable is not None:
                untranslatable.append(f"{kind} blocks")
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


def tools_from_anthropic(
    tools: Any, untranslatable: list[str] | None = None
) -> list[dict[str, Any]] | None:
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise InvalidRequest("`tools` must be a list")
    out = []
    for i, t in enumerate(tools):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise InvalidRequest(f"tools[{i}] needs a name")
        if t.get("type") not in (None, "custom") and untranslatable is not None:
            # A server tool (web search, code execution...): Anthropic runs it, nobody else.
            untranslatable.append(f"the {t['type']} server tool")
            continue
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
    extra = _translated_options(body)
    if EXTENSION in body:  # template variables, taken as the OpenAI endpoints take them
        extra[EXTENSION] = body[EXTENSION]
    lossy: list[str] = []
    chat = ChatRequest(
        model=model,
        messages=messages_from_anthropic(body.get("system"), messages, lossy),
        stream=stream,
        max_tokens=max_tokens,
        temperature=check_number(body, "temperature", 0.0, 1.0),
        top_p=check_number(body, "top_p", 0.0, 1.0),
        stop=check_stop(body.get("stop_sequences"), "stop_sequences"),
        tools=tools_from_anthropic(body.get("tools"), lossy),
        tool_choice=tool_choice_from_anthropic(body.get("tool_choice")),
        user=user if isinstance(user, str) else None,
        include_usage=True,
        extra=extra,
        cache_control=parse_cache_control(body.get("cache"), headers),
    )
    # An Anthropic upstream gets the body itself: nothing above is lost on the way.
    return attach(chat, "anthropic", body, sorted(set(lossy)))


def _translated_options(body: dict[str, Any]) -> dict[str, Any]:
    """Anthropic options other upstreams know under OpenAI names."""
    extra: dict[str, Any] = {}
    if body.get("top_k") is not None:
        extra["top_k"] = body["top_k"]
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens") or 0
        extra["reasoning_effort"] = (
            "low" if budget <= 2048 else "medium" if budget <= 8192 else "high"
        )
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("disable_parallel_tool_use"):
        extra["parallel_tool_calls"] = False
    return extra


# --- gateway form → upstream request ---------------------------------------------------


# --- gateway answer → client -----------------------------------------------------------


def _usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens - usage.cached_input_tokens - usage.cache_write_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_input_tokens,
        "output_tokens": usage.output_tokens,
    }


def _thinking_blocks(extra: dict[str, Any]) -> list[dict[str, Any]]:
    """Reasoning as thinking blocks: Anthropic's own (with signatures), or an OpenAI-compatible
    upstream's reasoning text."""
    if extra.get("thinking_blocks"):
        return list(extra["thinking_blocks"])
    reasoning = (extra.get("message") or {}).get("reasoning_content")
    if not reasoning:
        return []
    signature = extra.get("thinking_signature") or ""
    return [{"type": "thinking", "thinking": reasoning, "signature": signature}]


def answer_body(answer: ChatAnswer, request_id: str, model: str, meta: dict[str, Any]) -> bytes:
    content: list[dict[str, Any]] = _thinking_blocks(answer.extra)
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

    def _thinking(self, extra: dict[str, Any]) -> bytes:
        out = b""
        piece = (extra.get("message") or {}).get("reasoning_content")
        if piece:
            if self.block_kind != "thinking":
                block = {"type": "thinking", "thinking": "", "signature": ""}
                out += self._open("thinking", block)
            delta = {"type": "thinking_delta", "thinking": piece}
            out += _event(
                b"content_block_delta",
                {"type": "content_block_delta", "index": self.block, "delta": delta},
            )
        signature = extra.get("thinking_signature")
        if signature and self.block_kind == "thinking":
            delta = {"type": "signature_delta", "signature": signature}
            out += _event(
                b"content_block_delta",
                {"type": "content_block_delta", "index": self.block, "delta": delta},
            )
        return out

    def events(self, events: list[Any]) -> bytes:
        out = b""
        for ev in events:
            if ev.extra:
                out += self._thinking(ev.extra)
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

    def end(self, ctx: RequestContext) -> bytes:
        out = self._close()
        u = _usage_json(ctx.usage)
        meta = ctx.meta()
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


class AnthropicMessages:
    """The Anthropic Messages API (`POST /v1/messages`) as a `ClientProtocol`."""

    name = "anthropic"

    def parse_request(self, raw: bytes, headers: Mapping[str, str]) -> ChatRequest:
        return parse_request(raw, headers)

    def encode_answer(self, answer: ChatAnswer, ctx: RequestContext) -> bytes:
        # The upstream's own model name (the alias is the x-hybridfast-model header).
        return answer_body(answer, ctx.request_id, answer.model or ctx.route, ctx.meta())

    def stream_encoder(self, request: ChatRequest, ctx: RequestContext) -> StreamEncoder:
        model = ctx.deployment.model if ctx.deployment is not None else request.model
        return StreamEncoder(ctx.request_id, model, ctx.input_estimate)

    def encode_error(self, err: GatewayError) -> bytes:
        return error_body(err)


ANTHROPIC_MESSAGES = AnthropicMessages()
