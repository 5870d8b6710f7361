"""Ollama as an upstream: `/api/chat` (NDJSON when streaming) and `/api/embed`."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import orjson

from hybridfast.config import ProviderConfig
from hybridfast.errors import InvalidRequest
from hybridfast.passthrough import untranslatable
from hybridfast.providers.base import Provider, ProviderError, StreamEvent, stream_lines
from hybridfast.providers.fanout import fan_out, requested_n
from hybridfast.types import ChatAnswer, ChatRequest, Deployment, Usage


def _messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        role = m.get("role")
        if role == "developer":
            role = "system"
        msg: dict[str, Any] = {"role": role}
        content = m.get("content")
        if isinstance(content, list):
            text: list[str] = []
            images: list[str] = []
            for part in content:
                if part.get("type") == "text":
                    text.append(part.get("text", ""))
                elif part.get("type") == "image_url":
                    url = (part.get("image_url") or {}).get("url", "")
                    if ";base64," in url:
                        images.append(url.split(";base64,", 1)[1])
            msg["content"] = "".join(text)
            if images:
                msg["images"] = images
        else:
            msg["content"] = content or ""
        if m.get("tool_calls"):
            calls = []
            for c in m["tool_calls"]:
                fn = c.get("function") or {}
                try:
                    args = orjson.loads(fn.get("arguments") or "{}")
                except orjson.JSONDecodeError:
                    args = {}
                calls.append({"function": {"name": fn.get("name", ""), "arguments": args}})
            msg["tool_calls"] = calls
        out.append(msg)
    return out


def _usage(data: dict[str, Any]) -> Usage | None:
    if "prompt_eval_count" not in data and "eval_count" not in data:
        return None
    return Usage(
        input_tokens=int(data.get("prompt_eval_count") or 0),
        output_tokens=int(data.get("eval_count") or 0),
    )


def _finish(data: dict[str, Any], had_tools: bool) -> str:
    if had_tools:
        return "tool_calls"
    return "length" if data.get("done_reason") == "length" else "stop"


def _tool_calls(message: dict[str, Any], start: int) -> list[dict[str, Any]]:
    calls = []
    for i, c in enumerate(message.get("tool_calls") or ()):
        fn = c.get("function") or {}
        args = fn.get("arguments")
        calls.append(
            {
                "index": start + i,
                "id": f"call_{start + i}",
                "name": fn.get("name", ""),
                "arguments": args if isinstance(args, str) else orjson.dumps(args or {}).decode(),
            }
        )
    return calls


class OllamaProvider(Provider):
    kind = "ollama"

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config, "http://127.0.0.1:11434")

    def auth_headers(self) -> dict[str, str]:
        key = self.config.api_key
        return {"Authorization": f"Bearer {key}"} if key else {}

    def body(self, deployment: Deployment, request: ChatRequest, stream: bool) -> dict[str, Any]:
        lost = untranslatable(request, "ollama")
        if lost is not None:  # refused, not silently dropped
            raise ProviderError(f"{self.name}: {lost}", status=400, client_fault=True)
        options: dict[str, Any] = {}
        if request.max_tokens is not None:
            options["num_predict"] = request.max_tokens
        if request.temperature is not None:
            options["temperature"] = request.temperature
        if request.top_p is not None:
            options["top_p"] = request.top_p
        if request.stop:
            options["stop"] = request.stop
        body: dict[str, Any] = {
            "model": deployment.model,
            "messages": _messages(request.messages),
            "stream": stream,
        }
        if options:
            body["options"] = options
        if request.tools:
            body["tools"] = request.tools
        fmt = request.response_format or {}
        if fmt.get("type") == "json_object":
            body["format"] = "json"
        elif fmt.get("type") == "json_schema":
            body["format"] = (fmt.get("json_schema") or {}).get("schema") or "json"
        return body

    async def chat(
        self, deployment: Deployment, request: ChatRequest, *, retries: int = 0
    ) -> ChatAnswer:
        n = requested_n(request)
        if n > 1:  # one answer per call here: n calls, each charged
            return await fan_out(lambda r: self.chat(deployment, r, retries=retries), request, n)
        data = await self.post_json(
            "/api/chat", self.body(deployment, request, False), retries=retries
        )
        if not isinstance(data, dict) or not isinstance(data.get("message"), dict):
            raise ProviderError(f"{self.name}: the answer has no message")
        message = data["message"]
        calls = [
            {
                "id": c["id"],
                "type": "function",
                "function": {"name": c["name"], "arguments": c["arguments"]},
            }
            for c in _tool_calls(message, 0)
        ]
        answer = ChatAnswer(
            content=message.get("content") or "",
            finish_reason=_finish(data, bool(calls)),
            tool_calls=calls,
            model=str(data.get("model") or deployment.model),
            deployment=deployment.id,
        )
        usage = _usage(data)
        if usage is not None:
            answer.usage = usage
        else:
            answer.usage.estimated = True
        return answer

    async def stream(
        self, deployment: Deployment, request: ChatRequest, *, retries: int = 0
    ) -> AsyncGenerator[list[StreamEvent], None]:
        body = self.body(deployment, request, True)
        n_tools = 0
        loads = orjson.loads
        async for lines in stream_lines(self, "/api/chat", body, retries=retries):
            batch: list[StreamEvent] = []
            for line in lines:
                if not line.strip():
                    continue
                try:
                    data = loads(line)
                except orjson.JSONDecodeError:
                    raise ProviderError(f"{self.name}: a stream line is not JSON") from None
                if "error" in data:
                    raise ProviderError(
                        f"{self.name}: the upstream sent an error mid-stream: "
                        f"{self.scrub(str(data['error']))[:200]}"
                    )
                message = data.get("message") or {}
                text = message.get("content")
                calls = _tool_calls(message, n_tools) if message.get("tool_calls") else None
                if calls:
                    n_tools += len(calls)
                if data.get("done"):
                    if text or calls:
                        batch.append(StreamEvent(text or None, tool_calls=calls))
                    batch.append(
                        StreamEvent(finish_reason=_finish(data, n_tools > 0), usage=_usage(data))
                    )
                elif text or calls:
                    batch.append(StreamEvent(text or None, tool_calls=calls))
            if batch:
                yield batch

    async def embed(
        self,
        deployment: Deployment,
        inputs: list[str] | list[list[int]],
        *,
        dimensions: int | None,
    ) -> tuple[list[list[float]], Usage]:
        if inputs and not isinstance(inputs[0], str):
            raise InvalidRequest("Ollama embeds text, not token arrays")
        body: dict[str, Any] = {"model": deployment.model, "input": inputs}
        if dimensions is not None:
            body["dimensions"] = dimensions
        data = await self.post_json("/api/embed", body, retries=self.config.max_retries)
        vectors = data.get("embeddings") if isinstance(data, dict) else None
        if not isinstance(vectors, list) or len(vectors) != len(inputs):
            raise ProviderError(f"{self.name}: the embed answer does not match the inputs")
        count = data.get("prompt_eval_count")
        usage = Usage(input_tokens=int(count or 0), estimated=count is None)
        return [[float(x) for x in v] for v in vectors], usage
