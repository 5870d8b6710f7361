"""The OpenAI Responses API (`POST /v1/responses`) as clients speak it.

A Responses request becomes the gateway's own (Chat Completions shaped) request, so every
upstream can serve it through the one pipeline: `input` items become messages (function
calls and their outputs become assistant tool calls and tool turns), `instructions` the
system turn, `text.format` the `response_format`, function tools chat tools. The answer goes
back as a `response` object, or as the real event sequence when streamed
(`response.created` → `response.in_progress` → per output item `output_item.added`,
`content_part.added`, `output_text.delta`..., `output_text.done`, `content_part.done`,
`output_item.done` → `response.completed` with usage), each event with its
`sequence_number`.

Stateful conversations (`previous_response_id`) are the server's job: it keeps each stored
response's whole conversation (`ResponsesRequest.conversation()`) and hands the earlier
turns to `to_chat` as `history`.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from hybridfast.errors import GatewayError, InvalidRequest, Unsupported
from hybridfast.protocols.common import check_int, check_number, parse_cache_control
from hybridfast.protocols.common import read_json_object as _read_json_object
from hybridfast.protocols.openai import error_body, error_json
from hybridfast.types import ChatAnswer, ChatRequest, Usage

__all__ = [
    "ResponsesRequest",
    "StreamEncoder",
    "error_body",
    "error_json",
    "new_response_id",
    "parse_request",
    "response_object",
]

# Request fields handled here; anything else is echoed back where the API echoes it.
_INPUT_ROLES = frozenset({"user", "system", "developer", "assistant"})
# Tool kinds only OpenAI's own servers run (web search, file search, computer use...).
_FUNCTION_TOOL = "function"


def new_response_id() -> str:
    return "resp_" + secrets.token_hex(24)


def _item_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


@dataclass(slots=True)
class ResponsesRequest:
    """A checked Responses request: the body as sent, plus the parts the gateway reads."""

    body: dict[str, Any]
    model: str
    stream: bool
    store: bool
    previous_response_id: str | None
    instructions: str | None
    input_messages: list[dict[str, Any]]  # this turn's input as chat messages
    input_items: list[dict[str, Any]]  # this turn's input as Responses items (input_items)
    chat: ChatRequest
    id: str = field(default_factory=new_response_id)
    created_at: int = field(default_factory=lambda: int(time.time()))

    def to_chat(self, history: list[dict[str, Any]]) -> ChatRequest:
        """The gateway request for this turn, after the stored turns of `history`."""
        messages: list[dict[str, Any]] = []
        if self.instructions:
            # As OpenAI does: instructions apply to this turn only, never carried over.
            messages.append({"role": "system", "content": self.instructions})
        messages.extend(history)
        messages.extend(self.input_messages)
        if not messages:
            raise InvalidRequest("`input` is empty and there is no earlier turn to answer")
        self.chat.messages = messages
        return self.chat

    def conversation(self, history: list[dict[str, Any]], answer: ChatAnswer) -> list[Any]:
        """Every turn so far, this answer included: what a later `previous_response_id`
        continues from (instructions excluded, as OpenAI excludes them)."""
        turn: dict[str, Any] = {"role": "assistant", "content": answer.content or None}
        if answer.tool_calls:
            turn["tool_calls"] = answer.tool_calls
        return [*history, *self.input_messages, turn]


# --- input items → chat messages -------------------------------------------------------


def _text_parts(content: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest(f"{where}.content must be a string or a list of parts")
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        if not isinstance(part, dict):
            raise InvalidRequest(f"{where}.content[{j}] must be an object")
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            text = part.get("text")
            if not isinstance(text, str):
                raise InvalidRequest(f"{where}.content[{j}].text must be a string")
            parts.append({"type": "text", "text": text})
        elif kind == "refusal":
            parts.append({"type": "text", "text": str(part.get("refusal", ""))})
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str) or not url:
                raise Unsupported(
                    f"{where}.content[{j}]: images by file_id are not supported",
                    hint="send the image as `image_url` (an https or data: URL)",
                )
            image: dict[str, Any] = {"url": url}
            if part.get("detail"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise Unsupported(
                f"{where}.content[{j}]: content of type {kind!r} is not supported",
                hint="use input_text or input_image parts",
            )
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _output_text(output: Any, where: str) -> str:
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        text = _text_parts(output, where)
        if isinstance(text, str):
            return text
    raise InvalidRequest(f"{where}.output must be a string or a list of text parts")


def input_messages(value: Any) -> list[dict[str, Any]]:
    """`input` (a string or a list of items) as chat messages."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRequest("`input` must be a string or a list of items")
    out: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{where} must be an object")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in _INPUT_ROLES:
                raise InvalidRequest(
                    f"{where}.role must be one of user, system, developer, assistant"
                )
            out.append({"role": role, "content": _text_parts(item.get("content"), where)})
        elif kind == "function_call":
            call_id, name = item.get("call_id"), item.get("name")
            if not isinstance(call_id, str) or not isinstance(name, str):
                raise InvalidRequest(f"{where}: a function_call needs call_id and name")
            args = item.get("arguments", "")
            call = {
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": args if isinstance(args, str) else ""},
            }
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)  # parallel calls: one assistant turn
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str):
                raise InvalidRequest(f"{where}: a function_call_output needs call_id")
            content = _output_text(item.get("output"), where)
            out.append({"role": "tool", "tool_call_id": call_id, "content": content})
        elif kind == "reasoning":
            continue  # reasoning items are the upstream's own trace: they do not travel
        else:
            raise Unsupported(
                f"{where}: input items of type {kind!r} are not supported",
                hint="send message, function_call and function_call_output items",
            )
    return out


# --- tools and formats -----------------------------------------------------------------


def chat_tools(tools: Any) -> list[dict[str, Any]] | None:
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise InvalidRequest("`tools` must be a list")
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise InvalidRequest(f"tools[{i}] must be an object")
        kind = tool.get("type")
        if kind != _FUNCTION_TOOL:
            raise Unsupported(
                f"tools[{i}]: tools of type {kind!r} run on OpenAI's servers only",
                hint="declare it as a function tool that your code runs",
            )
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest(f"tools[{i}].name must be a non-empty string")
        fn: dict[str, Any] = {
            "name": name,
            "parameters": tool.get("parameters") or {"type": "object", "properties": {}},
        }
        if tool.get("description"):
            fn["description"] = tool["description"]
        if tool.get("strict") is not None:
            fn["strict"] = bool(tool["strict"])
        out.append({"type": "function", "function": fn})
    return out or None


def chat_tool_choice(choice: Any) -> Any:
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": str(choice.get("name", ""))}}
    raise Unsupported(
        "`tool_choice` of this kind is not supported",
        hint="use auto, none, required or a function",
    )


def chat_response_format(text: Any) -> dict[str, Any] | None:
    """`text.format` as a Chat Completions `response_format`."""
    if text is None:
        return None
    if not isinstance(text, dict):
        raise InvalidRequest("`text` must be an object")
    fmt = text.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise InvalidRequest("`text.format` must be an object")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise InvalidRequest("`text.format.schema` must be a JSON schema object")
        spec: dict[str, Any] = {"name": str(fmt.get("name") or "response"), "schema": schema}
        if fmt.get("strict") is not None:
            spec["strict"] = bool(fmt["strict"])
        if fmt.get("description"):
            spec["description"] = fmt["description"]
        return {"type": "json_schema", "json_schema": spec}
    raise InvalidRequest("`text.format.type` must be text, json_object or json_schema")


# --- parsing ---------------------------------------------------------------------------


def _flag(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidRequest(f"`{key}` must be a boolean")
    return value


def parse_request(raw: bytes, headers: Any = None) -> ResponsesRequest:
    """A Responses body, checked; `InvalidRequest`/`Unsupported` name what is wrong."""
    body = _read_json_object(raw)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("`model` must be a non-empty string")
    if body.get("background"):
        raise Unsupported("`background` responses are not supported", hint="leave it out")
    if body.get("conversation") is not None:
        raise Unsupported(
            "`conversation` objects are not supported",
            hint="chain responses with previous_response_id",
        )
    previous = body.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous):
        raise InvalidRequest("`previous_response_id` must be a response id")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise InvalidRequest("`instructions` must be a string")
    items = body.get("input")
    messages = input_messages(items)
    if not messages and previous is None:
        raise InvalidRequest("`input` is required", hint="send a string or a list of items")
    reasoning = body.get("reasoning")
    if reasoning is not None and not isinstance(reasoning, dict):
        raise InvalidRequest("`reasoning` must be an object")
    user = body.get("safety_identifier") or body.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidRequest("`user` must be a string")
    extra: dict[str, Any] = {}
    if body.get("parallel_tool_calls") is False:
        extra["parallel_tool_calls"] = False
    if reasoning and reasoning.get("effort"):
        extra["reasoning_effort"] = reasoning["effort"]
    stream = _flag(body, "stream", False)
    chat = ChatRequest(
        model=model,
        messages=[],
        stream=stream,
        max_tokens=check_int(body, "max_output_tokens"),
        temperature=check_number(body, "temperature", 0.0, 2.0),
        top_p=check_number(body, "top_p", 0.0, 1.0),
        tools=chat_tools(body.get("tools")),
        tool_choice=chat_tool_choice(body.get("tool_choice")),
        response_format=chat_response_format(body.get("text")),
        user=user,
        include_usage=True,
        extra=extra,
        cache_control=parse_cache_control(body.get("cache"), headers),
    )
    if isinstance(items, str):
        items = [{"type": "message", "role": "user", "content": items}]
    return ResponsesRequest(
        body=body,
        model=model,
        stream=stream,
        store=_flag(body, "store", True),
        previous_response_id=previous,
        instructions=instructions,
        input_messages=messages,
        input_items=list(items or []),
        chat=chat,
    )


# --- answers ---------------------------------------------------------------------------


def usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cached_input_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def function_call_item(
    item_id: str, call: dict[str, Any], status: str = "completed"
) -> dict[str, Any]:
    fn = call.get("function") or {}
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call.get("id") or item_id.replace("fc_", "call_", 1),
        "name": fn.get("name", ""),
        "arguments": fn.get("arguments", ""),
    }


def output_items(answer: ChatAnswer) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if answer.content or not answer.tool_calls:
        items.append(message_item(_item_id("msg"), answer.content))
    items.extend(function_call_item(_item_id("fc"), call) for call in answer.tool_calls)
    return items


def response_object(
    request: ResponsesRequest,
    *,
    model: str,
    output: list[dict[str, Any]],
    usage: Usage | None,
    status: str = "completed",
    finish_reason: str = "stop",
    meta: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The `response` object, echoing the request's settings as OpenAI does."""
    body = request.body
    incomplete = None
    if status == "completed" and finish_reason == "length":
        status, incomplete = "incomplete", {"reason": "max_output_tokens"}
    elif status == "completed" and finish_reason == "content_filter":
        status, incomplete = "incomplete", {"reason": "content_filter"}
    obj: dict[str, Any] = {
        "id": request.id,
        "object": "response",
        "created_at": request.created_at,
        "status": status,
        "background": False,
        "error": error,
        "incomplete_details": incomplete,
        "instructions": request.instructions,
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "model": model,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True) is not False,
        "previous_response_id": request.previous_response_id,
        "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
        "service_tier": body.get("service_tier") or "default",
        "store": request.store,
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation") or "disabled",
        "usage": usage_json(usage) if usage is not None else None,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }
    if status == "completed" or status == "incomplete":
        obj["completed_at"] = int(time.time())
    if meta is not None:
        obj["x_hybridfast"] = meta
    return obj


def answer_object(
    request: ResponsesRequest, answer: ChatAnswer, meta: dict[str, Any]
) -> dict[str, Any]:
    # A Responses upstream's own output items go back whole (reasoning items, annotations).
    output = answer.extra.get("response_output") or output_items(answer)
    return response_object(
        request,
        model=answer.model or request.model,
        output=output,
        usage=answer.usage,
        finish_reason=answer.finish_reason,
        meta=meta,
    )


def answer_from_output(output: list[dict[str, Any]], finish_reason: str) -> ChatAnswer:
    """The gateway's answer from streamed output items (for the stored conversation)."""
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in output:
        if item.get("type") == "message":
            text.extend(part.get("text", "") for part in item.get("content") or ())
        elif item.get("type") == "function_call":
            calls.append(
                {
                    "id": item.get("call_id"),
                    "type": "function",
                    "function": {"name": item.get("name", ""), "arguments": item["arguments"]},
                }
            )
    return ChatAnswer(content="".join(text), finish_reason=finish_reason, tool_calls=calls)


# --- streaming -------------------------------------------------------------------------


class StreamEncoder:
    """Gateway stream events into the Responses event sequence. `output` and `text` hold
    the finished items once `end()` ran (what the store keeps)."""

    content_type = "text/event-stream; charset=utf-8"

    def __init__(self, request: ResponsesRequest, model: str) -> None:
        self.request = request
        self.model = model
        self.sequence = 0
        self.output: list[dict[str, Any]] = []
        self.finish = "stop"
        self._message: dict[str, Any] | None = None  # the open message item
        self._message_index = -1
        self._calls: dict[int, tuple[int, dict[str, Any]]] = {}  # tool index → (output, item)

    def _event(self, kind: str, data: dict[str, Any]) -> bytes:
        data = {"type": kind, "sequence_number": self.sequence, **data}
        self.sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    def _snapshot(self, status: str, usage: Usage | None = None, **extra: Any) -> dict[str, Any]:
        return response_object(
            self.request,
            model=self.model,
            output=self.output if status != "in_progress" else [],
            usage=usage,
            status=status,
            finish_reason=self.finish,
            **extra,
        )

    def start(self) -> bytes:
        snapshot = self._snapshot("in_progress")
        return self._event("response.created", {"response": snapshot}) + self._event(
            "response.in_progress", {"response": snapshot}
        )

    def _open_message(self) -> bytes:
        item = message_item(_item_id("msg"), "", status="in_progress")
        item["content"] = []
        self._message = item
        self._message_index = len(self.output)
        self.output.append(item)
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        item["content"].append(dict(part))
        where = {"item_id": item["id"], "output_index": self._message_index}
        return self._event(
            "response.output_item.added",
            {"output_index": self._message_index, "item": {**item, "content": []}},
        ) + self._event("response.content_part.added", {**where, "content_index": 0, "part": part})

    def _close_message(self) -> bytes:
        item = self._message
        if item is None:
            return b""
        self._message = None
        part = item["content"][0]
        where = {"item_id": item["id"], "output_index": self._message_index, "content_index": 0}
        item["status"] = "completed"
        return (
            self._event(
                "response.output_text.done", {**where, "text": part["text"], "logprobs": []}
            )
            + self._event("response.content_part.done", {**where, "part": part})
            + self._event(
                "response.output_item.done", {"output_index": self._message_index, "item": item}
            )
        )

    def _text(self, text: str) -> bytes:
        out = b"" if self._message is not None else self._open_message()
        item = self._message
        assert item is not None
        item["content"][0]["text"] += text
        return out + self._event(
            "response.output_text.delta",
            {
                "item_id": item["id"],
                "output_index": self._message_index,
                "content_index": 0,
                "delta": text,
                "logprobs": [],
            },
        )

    def _tool(self, call: dict[str, Any]) -> bytes:
        out = b""
        index = call.get("index", 0)
        if index not in self._calls:
            out += self._close_message()
            item_id = _item_id("fc")
            item = {
                "id": item_id,
                "type": "function_call",
                "status": "in_progress",
                "call_id": call.get("id") or item_id.replace("fc_", "call_", 1),
                "name": call.get("name") or "",
                "arguments": "",
            }
            self._calls[index] = (len(self.output), item)
            self.output.append(item)
            out += self._event(
                "response.output_item.added", {"output_index": len(self.output) - 1, "item": item}
            )
        position, item = self._calls[index]
        if call.get("name") and not item["name"]:
            item["name"] = call["name"]
        delta = call.get("arguments") or ""
        if delta:
            item["arguments"] += delta
            out += self._event(
                "response.function_call_arguments.delta",
                {"item_id": item["id"], "output_index": position, "delta": delta},
            )
        return out

    def events(self, events: list[Any]) -> bytes:
        out = b""
        for ev in events:
            if ev.text:
                out += self._text(ev.text)
            if ev.tool_calls:
                for call in ev.tool_calls:
                    out += self._tool(call)
            if ev.finish_reason:
                self.finish = ev.finish_reason
        return out

    def _close_calls(self) -> bytes:
        out = b""
        for position, item in sorted(self._calls.values(), key=lambda pair: pair[0]):
            item["status"] = "completed"
            out += self._event(
                "response.function_call_arguments.done",
                {
                    "item_id": item["id"],
                    "output_index": position,
                    "name": item["name"],
                    "arguments": item["arguments"],
                },
            ) + self._event("response.output_item.done", {"output_index": position, "item": item})
        self._calls.clear()
        return out

    def end(self, usage: Usage, meta: dict[str, Any]) -> bytes:
        if not self.output:
            self._open_message()  # an empty answer is still one (empty) message
        out = self._close_message() + self._close_calls()
        final = self._snapshot("completed", usage, meta=meta)
        kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
        return out + self._event(kind, {"response": final})

    def final_object(self, usage: Usage, meta: dict[str, Any]) -> dict[str, Any]:
        return self._snapshot("completed", usage, meta=meta)

    def error(self, err: GatewayError) -> bytes:
        hint = f" (hint: {err.hint})" if err.hint else ""
        message = f"{err.message}{hint}"
        failed = self._snapshot("failed", error={"code": err.code, "message": message})
        return self._event(
            "error", {"code": err.code, "message": message, "param": None}
        ) + self._event("response.failed", {"response": failed})
