"""The OpenAI Chat Completions API as clients speak it. The gateway's own request form
follows this API, so parsing is mostly checking; unknown parameters travel in `extra` to
upstreams that speak the same API."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from hybridfast.errors import GatewayError, InvalidRequest, Unsupported
from hybridfast.pipeline.context import RequestContext
from hybridfast.pipeline.validate import check_messages
from hybridfast.protocols.common import (
    check_int,
    check_number,
    check_stop,
    parse_cache_control,
    read_json_object,
)
from hybridfast.providers.fanout import MAX_N
from hybridfast.types import ChatAnswer, ChatRequest, Usage

_KNOWN = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "tools",
        "tool_choice",
        "response_format",
        "user",
        "n",
        "cache",
    }
)


def parse_request(raw: bytes, headers: Any = None) -> ChatRequest:
    """A Chat Completions body into the gateway's form; `InvalidRequest` names the problem."""
    body = read_json_object(raw)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("`model` must be a non-empty string")
    messages = check_messages(body.get("messages"))
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InvalidRequest("`stream` must be a boolean")
    n = body.get("n")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_N):
        raise InvalidRequest(f"`n` must be an integer from 1 to {MAX_N}")
    if stream and n is not None and n > 1:
        raise Unsupported("`n` above 1 is not supported when streaming", hint="send n requests")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise InvalidRequest("`stream_options` must be an object")
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise InvalidRequest("`tools` must be a list")
    response_format = body.get("response_format")
    if response_format is not None and not isinstance(response_format, dict):
        raise InvalidRequest("`response_format` must be an object")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidRequest("`user` must be a string")
    max_tokens = check_int(body, "max_completion_tokens") or check_int(body, "max_tokens")
    extra = {k: v for k, v in body.items() if k not in _KNOWN}
    if n is not None and n > 1:
        extra["n"] = n  # OpenAI-compatible upstreams answer it; the others are called n times
    return ChatRequest(
        model=model,
        messages=messages,
        stream=stream,
        max_tokens=max_tokens,
        temperature=check_number(body, "temperature", 0.0, 2.0),
        top_p=check_number(body, "top_p", 0.0, 1.0),
        stop=check_stop(body.get("stop"), "stop"),
        tools=tools or None,
        tool_choice=body.get("tool_choice"),
        response_format=response_format,
        user=user,
        include_usage=bool(options.get("include_usage")),
        extra=extra,
        cache_control=parse_cache_control(body.get("cache"), headers),
    )


def usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def answer_body(answer: ChatAnswer, request_id: str, model: str, meta: dict[str, Any]) -> bytes:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": answer.content if answer.content or not answer.tool_calls else None,
        "refusal": None,
    }
    if answer.tool_calls:
        message["tool_calls"] = answer.tool_calls
    extra = answer.extra
    # What an OpenAI-compatible upstream said beyond the gateway's form (reasoning_content,
    # annotations, logprobs, system_fingerprint, service_tier, its exact model) goes back.
    message.update(extra.get("message") or {})
    choice: dict[str, Any] = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": answer.finish_reason,
    }
    choice.update(extra.get("choice") or {})
    return orjson.dumps(
        {
            "id": f"chatcmpl-{request_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [choice, *(extra.get("choices") or ())],
            "usage": usage_json(answer.usage),
            **(extra.get("response") or {}),
            "x_hybridfast": meta,
        }
    )


class StreamEncoder:
    """Gateway stream events into Chat Completions chunks (`data: {...}`), ending with the
    finish chunk, the usage chunk when the client asked for it, and `data: [DONE]`. The last
    chunk carries `x_hybridfast` (request id, deployment, exact cost)."""

    content_type = "text/event-stream; charset=utf-8"

    def __init__(self, request_id: str, model: str, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.finish: str | None = None
        self._request_id, self._model, self._created = request_id, model, int(time.time())
        # Every chunk shares this head; only the choices differ.
        self._head = self._make_head(model, {})
        self._tail_null = b',"logprobs":null,"finish_reason":null}]}\n\n'
        self._started = False

    def _make_head(self, model: str, fields: dict[str, Any]) -> bytes:
        more = b"".join(b"," + orjson.dumps(k) + b":" + orjson.dumps(v) for k, v in fields.items())
        return (
            b'data: {"id":"chatcmpl-'
            + self._request_id.encode()
            + b'","object":"chat.completion.chunk","created":'
            + str(self._created).encode()
            + b',"model":'
            + orjson.dumps(model)
            + more
            + b',"choices":[{"index":0,"delta":'
        )

    def start(self) -> bytes:
        # The role chunk goes out with the first events: they may carry the upstream's
        # answer-level fields (its exact model, system_fingerprint, service_tier), which every
        # chunk then repeats, as the upstream's own chunks do.
        return b""

    def _role_chunk(self, events: list[Any]) -> bytes:
        self._started = True
        fields: dict[str, Any] = {}
        for ev in events:
            if ev.extra and ev.extra.get("response"):
                fields.update(ev.extra["response"])
        if fields:
            model = str(fields.pop("model", self._model))
            self._head = self._make_head(model, fields)
        return self._head + b'{"role":"assistant","content":"","refusal":null}' + self._tail_null

    def events(self, events: list[Any]) -> bytes:
        out = b"" if self._started else self._role_chunk(events)
        head, tail, dumps = self._head, self._tail_null, orjson.dumps
        for ev in events:
            if ev.extra and (ev.extra.get("message") or ev.extra.get("choice")):
                out += self._rich_chunk(ev)
            elif ev.text:
                out += head + b'{"content":' + dumps(ev.text) + b"}" + tail
            if ev.tool_calls:
                calls = []
                for c in ev.tool_calls:
                    call: dict[str, Any] = {"index": c.get("index", 0)}
                    fn: dict[str, Any] = {"arguments": c.get("arguments") or ""}
                    if c.get("id"):
                        call["id"] = c["id"]
                        call["type"] = "function"
                    if c.get("name"):
                        fn["name"] = c["name"]
                    call["function"] = fn
                    calls.append(call)
                out += head + dumps({"tool_calls": calls}) + tail
            if ev.finish_reason:
                self.finish = ev.finish_reason
        return out

    def _rich_chunk(self, ev: Any) -> bytes:
        """A chunk with fields beyond text (a reasoning delta, this piece's logprobs)."""
        delta: dict[str, Any] = {"content": ev.text} if ev.text else {}
        delta.update(ev.extra.get("message") or {})
        logprobs = (ev.extra.get("choice") or {}).get("logprobs")
        return (
            self._head
            + orjson.dumps(delta)
            + b',"logprobs":'
            + orjson.dumps(logprobs)
            + b',"finish_reason":null}]}\n\n'
        )

    def end(self, ctx: RequestContext) -> bytes:
        if not self._started:  # an answer of no events still opens with its role chunk
            return self._role_chunk([]) + self.end(ctx)
        usage, meta = ctx.usage, ctx.meta()
        finish = orjson.dumps(self.finish or "stop")
        if self.include_usage:
            out = self._head + b"{}" + b',"logprobs":null,"finish_reason":' + finish + b"}]}\n\n"
            # The usage chunk: same head, but no choices.
            head = self._head[: self._head.index(b'"choices":')]
            out += (
                head
                + b'"choices":[],"usage":'
                + orjson.dumps(usage_json(usage))
                + b',"x_hybridfast":'
                + orjson.dumps(meta)
                + b"}\n\n"
            )
        else:
            out = (
                self._head
                + b'{},"logprobs":null,"finish_reason":'
                + finish
                + b'}],"x_hybridfast":'
                + orjson.dumps(meta)
                + b"}\n\n"
            )
        return out + b"data: [DONE]\n\n"

    def error(self, err: GatewayError) -> bytes:
        return b"data: " + orjson.dumps(error_json(err)) + b"\n\n"


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def error_json(err: GatewayError) -> dict[str, Any]:
    hint = f" (hint: {err.hint})" if err.hint else ""
    return {
        "error": {
            "message": f"{err.message}{hint}",
            "type": _ERROR_TYPES.get(err.status, "api_error"),
            "code": err.code,
            "param": getattr(err, "param", None),
        }
    }


def error_body(err: GatewayError) -> bytes:
    return orjson.dumps(error_json(err))


class OpenAIChat:
    """The OpenAI Chat Completions API (`POST /v1/chat/completions`) as a `ClientProtocol`."""

    name = "openai"

    def parse_request(self, raw: bytes, headers: Mapping[str, str]) -> ChatRequest:
        return parse_request(raw, headers)

    def encode_answer(self, answer: ChatAnswer, ctx: RequestContext) -> bytes:
        # The upstream's own model name (the alias is the x-hybridfast-model header).
        return answer_body(answer, ctx.request_id, answer.model or ctx.route, ctx.meta())

    def stream_encoder(self, request: ChatRequest, ctx: RequestContext) -> StreamEncoder:
        model = ctx.deployment.model if ctx.deployment is not None else request.model
        return StreamEncoder(ctx.request_id, model, request.include_usage)

    def encode_error(self, err: GatewayError) -> bytes:
        return error_body(err)


OPENAI_CHAT = OpenAIChat()
