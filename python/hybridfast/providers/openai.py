"""OpenAI Chat Completions and Embeddings, for `openai` and `openai-compatible` upstreams
(vLLM, llama.cpp server, LM Studio...). The gateway's own request form already follows
this API, so the body is mostly passed through."""

from __future__ import annotations

import base64
from collections.abc import AsyncGenerator
from typing import Any

import msgspec

from hybridfast.config import ProviderConfig
from hybridfast.passthrough import native_body, untranslatable, upstream_extra
from hybridfast.providers.base import Provider, ProviderError, StreamEvent, stream_lines
from hybridfast.providers.openai_responses import (
    answer_from_response,
    responses_body,
    stream_response,
)
from hybridfast.types import ChatAnswer, ChatRequest, Deployment, Usage


# A stream chunk, decoded straight into the few fields the gateway reads (the rest of
# each chunk is skipped by the decoder instead of becoming Python objects).
class _Function(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCallDelta(msgspec.Struct):
    index: int = 0
    id: str | None = None
    function: _Function | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    tool_calls: list[_ToolCallDelta] | None = None
    # Reasoning text of vLLM, DeepSeek, Ollama and other OpenAI-compatible servers.
    reasoning_content: str | None = None
    reasoning: str | None = None


class _Choice(msgspec.Struct):
    delta: _Delta | None = None
    finish_reason: str | None = None
    logprobs: Any = None


class _Chunk(msgspec.Struct):
    choices: list[_Choice] | None = None
    usage: dict[str, Any] | None = None
    error: Any = None
    model: str | None = None
    system_fingerprint: str | None = None
    service_tier: str | None = None


_CORE_MESSAGE_FIELDS = frozenset({"role", "content", "tool_calls", "refusal", "function_call"})
_RESPONSE_FIELDS = ("model", "system_fingerprint", "service_tier")


def answer_extra(data: dict[str, Any], choice: dict[str, Any]) -> dict[str, Any]:
    """The fields of a Chat Completions answer the gateway's form has no place for."""
    extra: dict[str, Any] = {}
    message = choice.get("message") or {}
    fields = {k: v for k, v in message.items() if k not in _CORE_MESSAGE_FIELDS and v is not None}
    if fields:
        extra["message"] = fields
    if choice.get("logprobs") is not None:
        extra["choice"] = {"logprobs": choice["logprobs"]}
    response = {k: data[k] for k in _RESPONSE_FIELDS if data.get(k) is not None}
    if response:
        extra["response"] = response
    return extra


def chunk_extra(chunk: _Chunk, choice: _Choice, first: bool) -> dict[str, Any] | None:
    extra: dict[str, Any] = {}
    delta = choice.delta
    reasoning = delta.reasoning_content or delta.reasoning if delta is not None else None
    if reasoning:
        extra["message"] = {"reasoning_content": reasoning}
    if choice.logprobs is not None:
        extra["choice"] = {"logprobs": choice.logprobs}
    if first:
        response = {k: getattr(chunk, k) for k in _RESPONSE_FIELDS if getattr(chunk, k)}
        if response:
            extra["response"] = response
    return extra or None


_CHUNK = msgspec.json.Decoder(_Chunk)


def usage_from_openai(u: dict[str, Any] | None) -> Usage | None:
    if not u:
        return None
    prompt = u.get("prompt_tokens") or 0
    details = u.get("prompt_tokens_details") or {}
    out_details = u.get("completion_tokens_details") or {}
    cached = min(details.get("cached_tokens") or 0, prompt)
    return Usage(
        input_tokens=prompt,
        output_tokens=u.get("completion_tokens") or 0,
        cached_input_tokens=cached,
        reasoning_tokens=out_details.get("reasoning_tokens") or 0,
    )


class OpenAIProvider(Provider):
    kind = "openai"

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config, "https://api.openai.com/v1")
        # The official API wants max_completion_tokens (reasoning models refuse max_tokens);
        # the servers that copy the API mostly know only max_tokens.
        self._max_tokens_key = "max_completion_tokens" if config.kind == "openai" else "max_tokens"

    def auth_headers(self) -> dict[str, str]:
        key = self.config.api_key
        return {"Authorization": f"Bearer {key}"} if key else {}

    def body(self, deployment: Deployment, request: ChatRequest, stream: bool) -> dict[str, Any]:
        lost = untranslatable(request, "openai")
        if lost is not None:  # refused, not silently dropped
            raise ProviderError(f"{self.name}: {lost}", status=400, client_fault=True)
        body: dict[str, Any] = dict(upstream_extra(request.extra))
        body["model"] = deployment.model
        body["messages"] = request.messages
        if request.max_tokens is not None:
            body[self._max_tokens_key] = request.max_tokens
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.top_p is not None:
            body["top_p"] = request.top_p
        if request.stop:
            body["stop"] = request.stop
        if request.tools:
            body["tools"] = request.tools
            if request.tool_choice is not None:
                body["tool_choice"] = request.tool_choice
        if request.response_format is not None:
            body["response_format"] = request.response_format
        if request.user is not None and self.config.kind == "openai":
            body["user"] = request.user
        if stream:
            body["stream"] = True
            # Always ask for usage: the ledger needs it even when the client did not.
            body["stream_options"] = {"include_usage": True}
        return body

    def _responses_native(self, request: ChatRequest) -> dict[str, Any] | None:
        # Only OpenAI's own API is sure to serve the Responses API; compatible servers
        # get the translation to Chat Completions.
        return native_body(request, "responses") if self.config.kind == "openai" else None

    async def chat(
        self, deployment: Deployment, request: ChatRequest, *, retries: int = 0
    ) -> ChatAnswer:
        native = self._responses_native(request)
        if native is not None:  # a Responses client: its body, to the Responses API
            body = responses_body(native, deployment.model, False)
            data = await self.post_json("/responses", body, retries=retries)
            return answer_from_response(data, deployment, self.name)
        data = await self.post_json(
            "/chat/completions", self.body(deployment, request, False), retries=retries
        )
        try:
            choice = data["choices"][0]
            message = choice.get("message") or {}
        except (KeyError, IndexError, TypeError):
            raise ProviderError(f"{self.name}: the answer has no choices") from None
        usage = usage_from_openai(data.get("usage"))
        tool_calls = [
            {
                "id": c.get("id"),
                "type": "function",
                "function": {
                    "name": (c.get("function") or {}).get("name", ""),
                    "arguments": (c.get("function") or {}).get("arguments", ""),
                },
            }
            for c in message.get("tool_calls") or ()
        ]
        answer = ChatAnswer(
            content=message.get("content") or "",
            finish_reason=choice.get("finish_reason") or "stop",
            tool_calls=tool_calls,
            model=str(data.get("model") or deployment.model),
            deployment=deployment.id,
            extra=answer_extra(data, choice),
        )
        if len(data["choices"]) > 1:  # n > 1, answered by the upstream itself
            answer.extra["choices"] = data["choices"][1:]
        if usage is not None:
            answer.usage = usage
        else:
            answer.usage.estimated = True  # the pipeline fills in the estimate
        return answer

    async def stream(
        self, deployment: Deployment, request: ChatRequest, *, retries: int = 0
    ) -> AsyncGenerator[list[StreamEvent], None]:
        native = self._responses_native(request)
        if native is not None:
            body = responses_body(native, deployment.model, True)
            async for events in stream_response(self, body, retries=retries):
                yield events
            return
        body = self.body(deployment, request, True)
        decode = _CHUNK.decode
        first = True
        async for lines in stream_lines(self, "/chat/completions", body, retries=retries):
            batch: list[StreamEvent] = []
            for line in lines:
                if not line.startswith(b"data:"):
                    continue  # blank separators, `: keep-alive` comments
                try:
                    chunk = decode(line[5:])
                except msgspec.DecodeError:
                    if line[5:].strip() == b"[DONE]":
                        continue
                    raise ProviderError(f"{self.name}: a stream event is not valid") from None
                if chunk.error is not None and not chunk.choices:
                    message = (
                        chunk.error.get("message", "") if isinstance(chunk.error, dict) else ""
                    )
                    raise ProviderError(
                        f"{self.name}: the upstream sent an error mid-stream: "
                        f"{self.scrub(str(message))[:200]}"
                    )
                if chunk.choices:
                    choice = chunk.choices[0]
                    delta = choice.delta
                    text = delta.content if delta is not None else None
                    calls = delta.tool_calls if delta is not None else None
                    # Nearly every chunk is plain text: no call, no dict, for those.
                    plain = choice.logprobs is None and (
                        delta is None or not (delta.reasoning_content or delta.reasoning)
                    )
                    extra = None if plain and not first else chunk_extra(chunk, choice, first)
                    # Answer-level fields (model, fingerprint) ride on the first event that
                    # says something: a chunk of nothing but them is no output yet.
                    content = extra is not None and ("message" in extra or "choice" in extra)
                    if text or calls or choice.finish_reason or content:
                        first = False
                    else:
                        extra = None
                    if text or calls or choice.finish_reason or extra:
                        batch.append(
                            StreamEvent(
                                text or None,
                                tool_calls=[
                                    {
                                        "index": c.index,
                                        "id": c.id,
                                        "name": c.function.name if c.function else None,
                                        "arguments": (c.function.arguments or "")
                                        if c.function
                                        else "",
                                    }
                                    for c in calls
                                ]
                                if calls
                                else None,
                                finish_reason=choice.finish_reason,
                                extra=extra,
                            )
                        )
                if chunk.usage:
                    batch.append(StreamEvent(usage=usage_from_openai(chunk.usage)))
            if batch:
                yield batch

    async def embed(
        self,
        deployment: Deployment,
        inputs: list[str] | list[list[int]],
        *,
        dimensions: int | None,
    ) -> tuple[list[list[float]], Usage]:
        body: dict[str, Any] = {
            "model": deployment.model,
            "input": inputs,
            "encoding_format": "base64",  # a quarter of the bytes of JSON floats
        }
        if dimensions is not None:
            body["dimensions"] = dimensions
        data = await self.post_json("/embeddings", body, retries=self.config.max_retries)
        try:
            items = sorted(data["data"], key=lambda d: d.get("index", 0))
        except (KeyError, TypeError):
            raise ProviderError(f"{self.name}: the embeddings answer has no data") from None
        import numpy as np  # only embeddings need it; keeps `serve` start-up short

        vectors: list[list[float]] = []
        for item in items:
            emb = item.get("embedding")
            if isinstance(emb, str):
                vectors.append(np.frombuffer(base64.b64decode(emb), dtype="<f4").tolist())
            elif isinstance(emb, list):
                vectors.append([float(x) for x in emb])
            else:
                raise ProviderError(f"{self.name}: an embedding is neither base64 nor a list")
        if len(vectors) != len(inputs):
            raise ProviderError(
                f"{self.name}: asked for {len(inputs)} embeddings, got {len(vectors)}"
            )
        u = data.get("usage") or {}
        usage = Usage(input_tokens=int(u.get("prompt_tokens") or 0), estimated=not u)
        return vectors, usage
