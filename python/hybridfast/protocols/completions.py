"""OpenAI's legacy Completions API (`POST /v1/completions`) as a client protocol.

The prompt becomes one user turn of a chat request, so every chat upstream (OpenAI,
Anthropic, Ollama, any OpenAI-compatible server) answers it through the one pipeline; the
answer goes back as a `text_completion` (streamed: `text_completion` chunks, the usage chunk
when `stream_options.include_usage` asks for it, then `data: [DONE]`). `max_tokens` defaults
to 16, as in OpenAI's API.

What a chat upstream cannot do is refused with `ERR_UNSUPPORTED` instead of answered wrongly:
token-id prompts, several prompts in one request, `suffix` (fill-in-the-middle), `echo`,
`best_of` > 1.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from hybridfast.errors import GatewayError, InvalidRequest, Unsupported
from hybridfast.pipeline.context import RequestContext
from hybridfast.protocols.common import (
    check_int,
    check_number,
    check_stop,
    parse_cache_control,
    read_json_object,
)
from hybridfast.protocols.openai import error_body
from hybridfast.types import ChatAnswer, ChatRequest, StreamEvent, Usage

# The legacy API's own default: a completion of at most 16 tokens.
DEFAULT_MAX_TOKENS = 16
# Parameters a chat upstream understands under the same name: passed through.
_PASSED = ("presence_penalty", "frequency_penalty", "seed", "logit_bias")


def _prompt(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        return value[0]
    if isinstance(value, list) and value and all(isinstance(p, str) for p in value):
        raise Unsupported(
            "several prompts in one request are not supported",
            hint="send one request per prompt",
        )
    if isinstance(value, list) and value and not isinstance(value[0], str):
        raise Unsupported(
            "token-id prompts are not supported: the upstream may use another tokenizer",
            hint="send the prompt as text",
        )
    raise InvalidRequest("`prompt` must be a non-empty string")


def usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


def _finish(reason: str | None) -> str:
    # A text completion has no tool calls: everything that is not a cut-off is a stop.
    return reason if reason in ("length", "content_filter") else "stop"


class CompletionsProtocol:
    """The `ClientProtocol` (see `protocols/base.py`) of `/v1/completions`."""

    name = "completions"

    def parse_request(self, raw: bytes, headers: Mapping[str, str]) -> ChatRequest:
        body = read_json_object(raw)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidRequest("`model` must be a non-empty string")
        prompt = _prompt(body.get("prompt"))
        if body.get("suffix"):
            raise Unsupported("`suffix` (fill-in-the-middle) is not supported")
        if body.get("echo"):
            raise Unsupported("`echo` is not supported", hint="prepend the prompt yourself")
        if body.get("best_of") not in (None, 1):
            raise Unsupported("`best_of` other than 1 is not supported")
        if body.get("n") not in (None, 1):
            raise Unsupported("`n` other than 1 is not supported", hint="send n requests")
        stream = body.get("stream", False)
        if not isinstance(stream, bool | None):
            raise InvalidRequest("`stream` must be a boolean")
        options = body.get("stream_options") or {}
        if not isinstance(options, dict):
            raise InvalidRequest("`stream_options` must be an object")
        user = body.get("user")
        if user is not None and not isinstance(user, str):
            raise InvalidRequest("`user` must be a string")
        return ChatRequest(
            model=model,
            messages=[{"role": "user", "content": prompt}],
            stream=bool(stream),
            max_tokens=check_int(body, "max_tokens") or DEFAULT_MAX_TOKENS,
            temperature=check_number(body, "temperature", 0.0, 2.0),
            top_p=check_number(body, "top_p", 0.0, 1.0),
            stop=check_stop(body.get("stop"), "stop"),
            user=user,
            include_usage=bool(options.get("include_usage")),
            extra={k: body[k] for k in _PASSED if body.get(k) is not None},
            cache_control=parse_cache_control(body.get("cache"), headers),
        )

    def encode_answer(self, answer: ChatAnswer, ctx: RequestContext) -> bytes:
        return orjson.dumps(
            {
                "id": f"cmpl-{ctx.request_id}",
                "object": "text_completion",
                "created": int(time.time()),
                "model": answer.model or ctx.route,
                "choices": [
                    {
                        "text": answer.content,
                        "index": 0,
                        "logprobs": None,
                        "finish_reason": _finish(answer.finish_reason),
                    }
                ],
                "usage": usage_json(answer.usage),
                "x_hybridfast": ctx.meta(),
            }
        )

    def stream_encoder(self, request: ChatRequest, ctx: RequestContext) -> CompletionsStream:
        model = ctx.deployment.model if ctx.deployment is not None else ctx.route
        return CompletionsStream(ctx.request_id, model, request.include_usage)

    def encode_error(self, err: GatewayError) -> bytes:
        return error_body(err)


class CompletionsStream:
    """`text_completion` chunks; the last one carries the finish reason and `x_hybridfast`."""

    def __init__(self, request_id: str, model: str, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.finish: str | None = None
        self._head = {
            "id": f"cmpl-{request_id}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
        }

    def _chunk(self, text: str, finish: str | None, **extra: Any) -> bytes:
        choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
        data = {**self._head, "choices": [choice], **extra}
        return b"data: " + orjson.dumps(data) + b"\n\n"

    def start(self) -> bytes:
        return b""

    def events(self, batch: list[StreamEvent]) -> bytes:
        out = b""
        for event in batch:
            if event.text:
                out += self._chunk(event.text, None)
            if event.finish_reason:
                self.finish = event.finish_reason
        return out

    def end(self, ctx: RequestContext) -> bytes:
        meta = ctx.meta()
        finish = _finish(self.finish)
        if not self.include_usage:
            return self._chunk("", finish, x_hybridfast=meta) + b"data: [DONE]\n\n"
        usage = {**self._head, "choices": [], "usage": usage_json(ctx.usage), "x_hybridfast": meta}
        return self._chunk("", finish) + b"data: " + orjson.dumps(usage) + b"\n\ndata: [DONE]\n\n"

    def error(self, err: GatewayError) -> bytes:
        return b"data: " + error_body(err) + b"\n\n"


COMPLETIONS = CompletionsProtocol()
