"""Anthropic's Messages API as an upstream: request translation, JSON answers and the SSE
event sequence (message_start → content blocks → message_delta → message_stop)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import msgspec
import orjson

from hybridfast.config import ProviderConfig
from hybridfast.passthrough import native_body
from hybridfast.providers.anthropic_wire import STOP_TO_FINISH, to_upstream, usage_from_anthropic
from hybridfast.providers.base import Provider, ProviderError, StreamEvent, stream_lines
from hybridfast.providers.fanout import fan_out, requested_n
from hybridfast.types import ChatAnswer, ChatRequest, Deployment, Usage

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096


class AnthropicProvider(Provider):
    kind = "anthropic"

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config, "https://api.anthropic.com")

    def auth_headers(self) -> dict[str, str]:
        headers = {"anthropic-version": API_VERSION}
        if self.config.api_key:
            headers["x-api-key"] = self.config.api_key
        return headers

    def body(self, deployment: Deployment, request: ChatRequest, stream: bool) -> dict[str, Any]:
        native = native_body(request, "anthropic")
        if native is not None:
            # An Anthropic client: its body as sent (cache_control, system blocks, thinking,
            # server tools, documents...), with the gateway's model and stream flag.
            native["model"] = deployment.model
            if stream:
                native["stream"] = True
            return native
        default = deployment.max_output_tokens or DEFAULT_MAX_TOKENS
        body = to_upstream(request, deployment.model, default, stream)
        translate_options(body, request)
        return body

    async def count_tokens(self, deployment: Deployment, body: dict[str, Any]) -> int:
        """Anthropic's exact prompt count (`POST /v1/messages/count_tokens`) for a Messages
        body as the client sent it, with the deployment's model."""
        data = await self.post_json(
            "/v1/messages/count_tokens",
            {**body, "model": deployment.model},
            retries=self.config.max_retries,
        )
        tokens = data.get("input_tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, int) or isinstance(tokens, bool):
            raise ProviderError(f"{self.name}: the token count answer has no input_tokens")
        return tokens

    async def chat(
        self, deployment: Deployment, request: ChatRequest, *, retries: int = 0
    ) -> ChatAnswer:
        n = requested_n(request)
        if n > 1:  # one answer per call here: n calls, each charged
            return await fan_out(lambda r: self.chat(deployment, r, retries=retries), request, n)
        data = await self.post_json(
            "/v1/messages", self.body(deployment, request, False), retries=retries
        )
        if not isinstance(data, dict) or not isinstance(data.get("content"), list):
            raise ProviderError(f"{self.name}: the answer has no content")
        text: list[str] = []
        calls: list[dict[str, Any]] = []
        thinking: list[dict[str, Any]] = []
        for block in data["content"]:
            if block.get("type") == "text":
                text.append(block.get("text", ""))
            elif block.get("type") in ("thinking", "redacted_thinking"):
                thinking.append(block)
            elif block.get("type") == "tool_use" and block.get("name") == JSON_TOOL:
                text.append(orjson.dumps(block.get("input") or {}).decode())
            elif block.get("type") == "tool_use":
                calls.append(
                    {
                        "id": block.get("id"),
                        "type": "function",
                        "function": {
                            "name": block.get("name", ""),
                            "arguments": orjson.dumps(block.get("input") or {}).decode(),
                        },
                    }
                )
        usage = usage_from_anthropic(data.get("usage"))
        answer = ChatAnswer(
            content="".join(text),
            finish_reason=_finish(data.get("stop_reason"), bool(calls)),
            tool_calls=calls,
            model=str(data.get("model") or deployment.model),
            deployment=deployment.id,
            extra=thinking_extra(thinking),
        )
        if usage is not None:
            answer.usage = usage
        else:
            answer.usage.estimated = True
        return answer

    async def stream(
        self, deployment: Deployment, request: ChatRequest, *, retries: int = 0
    ) -> AsyncGenerator[list[StreamEvent], None]:
        body = self.body(deployment, request, True)
        usage: Usage | None = None
        tool_index: dict[int, int] = {}  # content block index → tool-call index
        json_blocks: set[int] = set()  # blocks of the structured-output tool
        decode = _EVENT.decode
        async for lines in stream_lines(self, "/v1/messages", body, retries=retries):
            batch: list[StreamEvent] = []
            for line in lines:
                if not line.startswith(b"data:"):
                    continue  # `event:` lines repeat the data's own "type"
                try:
                    event = decode(line[5:])
                except msgspec.DecodeError:
                    raise ProviderError(f"{self.name}: a stream event is not valid") from None
                kind = event.type
                if kind == "content_block_delta":
                    piece = _delta_event(event, tool_index, json_blocks)
                    if piece is not None:
                        batch.append(piece)
                elif kind == "content_block_start":
                    block = event.content_block or {}
                    if block.get("type") == "tool_use" and block.get("name") == JSON_TOOL:
                        json_blocks.add(event.index)
                    elif block.get("type") == "tool_use":
                        idx = len(tool_index)
                        tool_index[event.index] = idx
                        batch.append(
                            StreamEvent(
                                tool_calls=[
                                    {
                                        "index": idx,
                                        "id": block.get("id"),
                                        "name": block.get("name"),
                                        "arguments": "",
                                    }
                                ]
                            )
                        )
                    elif block.get("type") == "text" and block.get("text"):
                        batch.append(StreamEvent(block["text"]))
                elif kind == "message_start":
                    usage = usage_from_anthropic((event.message or {}).get("usage"))
                elif kind == "message_delta":
                    reason = event.delta.stop_reason if event.delta is not None else None
                    out = (event.usage or {}).get("output_tokens")
                    if usage is not None and out is not None:
                        usage.output_tokens = out
                    batch.append(
                        StreamEvent(
                            finish_reason=_finish(reason, bool(tool_index)),
                            usage=usage if out is not None else None,
                        )
                    )
                elif kind == "error":
                    err = event.error or {}
                    raise ProviderError(
                        f"{self.name}: the upstream sent an error mid-stream: "
                        f"{err.get('type', '')}: {self.scrub(str(err.get('message', '')))[:200]}",
                        status=529 if err.get("type") == "overloaded_error" else None,
                    )
            if batch:
                yield batch


# --- cross-protocol options ------------------------------------------------------------

# The tool that carries structured output: Anthropic fills its input with the JSON asked for.
JSON_TOOL = "hybridfast_json_output"
# `reasoning_effort` as an extended-thinking budget (Anthropic's minimum is 1024).
THINKING_BUDGET = {"low": 1024, "medium": 4096, "high": 16384}


def _finish(stop_reason: str | None, had_calls: bool) -> str:
    finish = STOP_TO_FINISH.get(stop_reason or "", "stop")
    # A forced structured-output tool is an answer, not a tool call.
    return "stop" if finish == "tool_calls" and not had_calls else finish


def _delta_event(
    event: _Event, tool_index: dict[int, int], json_blocks: set[int]
) -> StreamEvent | None:
    """A `content_block_delta` as a gateway event (None: nothing to pass on)."""
    delta = event.delta
    if delta is None:
        return None
    if delta.type == "text_delta":
        return StreamEvent(delta.text) if delta.text else None
    if delta.type == "thinking_delta":
        reasoning = {"message": {"reasoning_content": delta.thinking}}
        return StreamEvent(extra=reasoning) if delta.thinking else None
    if delta.type == "signature_delta":
        signature = {"thinking_signature": delta.signature}
        return StreamEvent(extra=signature) if delta.signature else None
    if delta.type != "input_json_delta":
        return None
    if event.index in json_blocks:  # structured output: the JSON is the text
        return StreamEvent(delta.partial_json) if delta.partial_json else None
    call = {
        "index": tool_index.get(event.index, 0),
        "id": None,
        "name": None,
        "arguments": delta.partial_json or "",
    }
    return StreamEvent(tool_calls=[call])


def thinking_extra(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    """Thinking blocks: as reasoning text for OpenAI clients, and whole (signatures included,
    which Anthropic wants back in the next turn) for Anthropic clients."""
    if not blocks:
        return {}
    text = "".join(b.get("thinking", "") for b in blocks if b.get("type") == "thinking")
    return {"message": {"reasoning_content": text}, "thinking_blocks": blocks}


def translate_options(body: dict[str, Any], request: ChatRequest) -> None:
    """OpenAI options that Anthropic spells differently: `response_format` (a forced tool
    whose input is the JSON), `parallel_tool_calls`, `reasoning_effort` (a thinking budget)."""
    fmt = request.response_format or {}
    forced = False
    if fmt.get("type") in ("json_schema", "json_object"):
        spec = fmt.get("json_schema") or {}
        schema = spec.get("schema") if fmt.get("type") == "json_schema" else None
        tool = {
            "name": JSON_TOOL,
            "description": spec.get("description") or "Give the answer as this JSON object.",
            "input_schema": schema or {"type": "object", "additionalProperties": True},
        }
        body["tools"] = [*body.get("tools", []), tool]
        if not request.tools:
            body["tool_choice"] = {"type": "tool", "name": JSON_TOOL}
            forced = True
    if request.extra.get("parallel_tool_calls") is False and body.get("tools"):
        choice = body.get("tool_choice") or {"type": "auto"}
        body["tool_choice"] = {**choice, "disable_parallel_tool_use": True}
    budget = THINKING_BUDGET.get(str(request.extra.get("reasoning_effort")))
    if budget is not None and not forced:  # Anthropic refuses thinking with a forced tool
        body["max_tokens"] = max(body["max_tokens"], budget + 1024)
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
        body.pop("temperature", None)  # thinking needs the default temperature
        body.pop("top_p", None)


# A stream event, decoded straight into the fields the gateway reads.
class _Delta(msgspec.Struct):
    type: str = ""
    text: str | None = None
    thinking: str | None = None
    signature: str | None = None
    partial_json: str | None = None
    stop_reason: str | None = None


class _Event(msgspec.Struct):
    type: str = ""
    index: int = 0
    delta: _Delta | None = None
    content_block: dict[str, Any] | None = None
    message: dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


_EVENT = msgspec.json.Decoder(_Event)
