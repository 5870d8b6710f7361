"""Fake upstreams that speak the real wire formats byte for byte, on 127.0.0.1.

One `FakeUpstream(kind)` per server: `openai` (Chat Completions JSON + SSE with the
include_usage chunk and `data: [DONE]`, `/v1/embeddings`, `/v1/models`), `anthropic` (Messages
JSON + the real SSE event sequence with `event:` lines, ping, usage in message_start and
message_delta, cache read/creation tokens) and `ollama` (`/api/chat` NDJSON, `/api/embed`,
`/api/tags`).

Switches (plain attributes, also settable over HTTP with `POST /_fake/config` so a fake in
another process can be steered):

    reply            the answer text (split into `chunks` pieces when streamed)
    chunks           how many content pieces a stream carries
    first_byte_s     delay before the response starts
    per_chunk_s      delay between stream pieces
    fail_status      answer this status (429 with Retry-After, 500, 529...) ...
    fail_times       ... for the next N calls (counted down), or
    fail_rate        ... at this probability per call
    retry_after      the Retry-After header of a 429
    cut_after        close the connection after this many content pieces (no end events)
    no_usage         leave every usage field out
    usage            override token counts: {"input", "output", "cached", "cache_write"}
    tool_call        answer with a tool call: {"name": ..., "arguments": {...}}
    dimensions       the length of fake embeddings

`requests` logs what arrived: `Received(path, headers, body)` with the decoded JSON body.
`url` is what a provider's `base_url` should be (`.../v1` for OpenAI, as the SDK does).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.responses_wire import openai_responses

KINDS = ("openai", "anthropic", "ollama")

DEFAULT_REPLY = "The quick brown fox jumps over the lazy dog."


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Switches:
    reply: str = DEFAULT_REPLY
    chunks: int = 9
    first_byte_s: float = 0.0
    per_chunk_s: float = 0.0
    fail_status: int | None = None
    fail_times: int = 0
    fail_rate: float = 0.0
    retry_after: float | None = 1.0
    cut_after: int | None = None
    no_usage: bool = False
    usage: dict[str, int] = field(default_factory=dict)
    tool_call: dict[str, Any] | None = None
    dimensions: int = 8
    model: str | None = None  # the model name reported back (default: the one asked for)
    # With `tool_call` set: answer `reply` once the conversation ends with a tool result (an
    # agent's loop: call the tool, then answer with what it returned).
    answer_tool_results: bool = False
    # OpenAI-compatible reasoning models (vLLM, DeepSeek): `reasoning_content` before the answer.
    reasoning: str | None = None


def split_reply(text: str, n: int) -> list[str]:
    """`text` in `n` pieces (fewer if it is shorter) that join back to it exactly."""
    if not text:
        return []
    n = max(1, min(n, len(text)))
    step, extra = divmod(len(text), n)
    pieces, at = [], 0
    for i in range(n):
        size = step + (1 if i < extra else 0)
        pieces.append(text[at : at + size])
        at += size
    return pieces


def count_tokens(text: str) -> int:
    return max(1, (len(text) + 3) // 4) if text else 0


def prompt_text(body: Any) -> str:
    """Every piece of text in a request body's prompt, for a token count."""
    parts: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, dict):
            for k, v in value.items():
                if k in ("text", "content", "system", "input", "arguments") or k in ("messages",):
                    walk(v)

    if isinstance(body, dict):
        walk(body.get("system"))
        walk(body.get("messages"))
        walk(body.get("input"))
    return " ".join(parts)


def _logprob(token: str) -> dict[str, Any]:
    """A logprobs entry as OpenAI writes it (a fixed, made-up probability)."""
    return {"token": token, "logprob": -0.25, "bytes": list(token.encode()), "top_logprobs": []}


def _ends_with_tool_result(body: dict[str, Any]) -> bool:
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    if last.get("role") == "tool":
        return True
    content = last.get("content")
    return isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )


def fake_embedding(text: str, dims: int) -> list[float]:
    """A deterministic unit vector for `text`."""
    digest = hashlib.sha256(text.encode()).digest()
    while len(digest) < dims * 4:
        digest += hashlib.sha256(digest).digest()
    raw = [((b - 127.5) / 127.5) for b in digest[:dims]]
    norm = sum(x * x for x in raw) ** 0.5 or 1.0
    return [x / norm for x in raw]


class FakeUpstream:
    def __init__(self, kind: str, *, host: str = "127.0.0.1", port: int = 0) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown fake kind {kind!r}")
        self.kind = kind
        self.host = host
        self.port = port
        self.switches = Switches()
        self.requests: list[Received] = []
        self.calls = 0
        self.cancelled = 0  # streams the client went away from before the end
        self._runner: web.AppRunner | None = None
        self._rng = random.Random(1234)

    # --- switches -----------------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        # Convenience: fake.reply, fake.chunks... read the switches.
        switches = self.__dict__.get("switches")
        if switches is not None and hasattr(switches, name):
            return getattr(switches, name)
        raise AttributeError(name)

    def set(self, **changes: Any) -> FakeUpstream:
        for key, value in changes.items():
            if not hasattr(self.switches, key):
                raise AttributeError(f"no switch {key!r}")
            setattr(self.switches, key, value)
        return self

    def reset(self) -> FakeUpstream:
        self.switches = Switches()
        self.requests.clear()
        self.calls = 0
        self.cancelled = 0
        return self

    def fail(
        self,
        status: int,
        *,
        times: int | None = None,
        rate: float | None = None,
        retry_after: float | None = 1.0,
    ) -> FakeUpstream:
        """Answer `status` for the next `times` calls, or at `rate`, or (neither) always."""
        self.switches.fail_status = status
        self.switches.fail_times = times if times is not None else (0 if rate else 1 << 30)
        self.switches.fail_rate = rate or 0.0
        self.switches.retry_after = retry_after
        return self

    def latency(self, first_byte_s: float = 0.0, per_chunk_s: float = 0.0) -> FakeUpstream:
        return self.set(first_byte_s=first_byte_s, per_chunk_s=per_chunk_s)

    def cut(self, after: int | None) -> FakeUpstream:
        return self.set(cut_after=after)

    # --- lifecycle ----------------------------------------------------------------------

    @property
    def root(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The provider `base_url` to configure for this fake."""
        return f"{self.root}/v1" if self.kind == "openai" else self.root

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/_fake/config", self._config)
        app.router.add_get("/_fake/requests", self._requests)
        if self.kind == "openai":
            for prefix in ("/v1", ""):
                app.router.add_post(f"{prefix}/chat/completions", self._openai_chat)
                app.router.add_post(f"{prefix}/responses", self._openai_responses)
                app.router.add_post(f"{prefix}/embeddings", self._openai_embed)
                app.router.add_get(f"{prefix}/models", self._openai_models)
        elif self.kind == "anthropic":
            app.router.add_post("/v1/messages", self._anthropic_messages)
            app.router.add_post("/v1/messages/count_tokens", self._anthropic_count_tokens)
        else:
            app.router.add_post("/api/chat", self._ollama_chat)
            app.router.add_post("/api/embed", self._ollama_embed)
            app.router.add_get("/api/tags", self._ollama_tags)
        return app

    async def start(self) -> FakeUpstream:
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- control endpoints --------------------------------------------------------------

    async def _config(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.pop("reset", False):
            self.reset()
        fail = body.pop("fail", None)
        if fail:
            self.fail(
                fail["status"],
                times=fail.get("times"),
                rate=fail.get("rate"),
                retry_after=fail.get("retry_after", 1.0),
            )
        self.set(**body)
        return web.json_response({"ok": True})

    async def _requests(self, request: web.Request) -> web.Response:
        return web.Response(
            body=orjson.dumps([{"path": r.path, "body": r.body} for r in self.requests]),
            content_type="application/json",
        )

    # --- common -------------------------------------------------------------------------

    async def _receive(self, request: web.Request) -> Any:
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        self.requests.append(Received(request.path, dict(request.headers), body))
        self.calls += 1
        return body

    def _should_fail(self) -> int | None:
        s = self.switches
        if s.fail_status is None:
            return None
        if s.fail_times > 0:
            s.fail_times -= 1
            return s.fail_status
        if s.fail_rate and self._rng.random() < s.fail_rate:
            return s.fail_status
        return None

    def _usage(self, body: Any, output_text: str) -> tuple[int, int, int, int]:
        u = self.switches.usage
        prompt = u.get("input", count_tokens(prompt_text(body)))
        out = u.get("output", max(1, len(split_reply(output_text, self.switches.chunks))))
        return prompt, out, u.get("cached", 0), u.get("cache_write", 0)

    def _model(self, body: Any) -> str:
        if self.switches.model:
            return self.switches.model
        return str(body.get("model", "fake")) if isinstance(body, dict) else "fake"

    async def _pause(self, seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds)

    async def _stream_start(self, request: web.Request, content_type: str) -> web.StreamResponse:
        resp = web.StreamResponse(
            status=200,
            headers={"Content-Type": content_type, "Cache-Control": "no-cache"},
        )
        await resp.prepare(request)
        return resp

    def _cut(self, request: web.Request) -> None:
        if request.transport is not None:
            request.transport.abort()

    # --- OpenAI -------------------------------------------------------------------------

    def _openai_error(self, status: int) -> web.Response:
        kinds = {
            429: ("rate_limit_exceeded", "requests", "Rate limit reached for requests"),
            500: ("server_error", "server_error", "The server had an error"),
            503: ("server_error", "server_error", "The engine is currently overloaded"),
            529: ("server_error", "server_error", "Overloaded"),
            400: ("invalid_request_error", "invalid_request_error", "Bad request"),
            401: ("invalid_api_key", "invalid_request_error", "Incorrect API key provided"),
        }
        code, typ, message = kinds.get(status, ("server_error", "server_error", "error"))
        if status == 401 and self.requests:
            # As OpenAI does: quote the key it was sent, masked in the middle.
            sent = self.requests[-1].headers.get("Authorization", "").removeprefix("Bearer ")
            message += f": {sent[:3]}{'*' * 12}{sent[-4:]}. You can find your API key at ..."
        headers = {}
        if status == 429 and self.switches.retry_after is not None:
            headers["Retry-After"] = str(self.switches.retry_after)
        body = {"error": {"message": message, "type": typ, "param": None, "code": code}}
        return web.Response(
            status=status, body=orjson.dumps(body), headers=headers, content_type="application/json"
        )

    async def _openai_chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._receive(request)
        status = self._should_fail()
        if status is not None:
            await self._pause(self.switches.first_byte_s)
            return self._openai_error(status)
        if not isinstance(body, dict) or not body.get("messages"):
            return self._openai_error(400)
        s = self.switches
        await self._pause(s.first_byte_s)
        tool_call = self._tool_call(body)
        model = self._model(body)
        created = int(time.time())
        cid = f"chatcmpl-{self.calls:08d}"
        text = "" if tool_call else s.reply
        prompt, out, cached, _ = self._usage(body, s.reply)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": out,
            "total_tokens": prompt + out,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        tool_calls = None
        if tool_call:
            tool_calls = [
                {
                    "id": "call_fake0001",
                    "type": "function",
                    "function": {
                        "name": tool_call["name"],
                        "arguments": orjson.dumps(tool_call.get("arguments", {})).decode(),
                    },
                }
            ]
        finish = "tool_calls" if tool_calls else "stop"
        if not body.get("stream"):
            message: dict[str, Any] = {
                "role": "assistant",
                "content": text if not tool_calls else None,
                "refusal": None,
                "annotations": [],
            }
            if tool_calls:
                message["tool_calls"] = tool_calls
            if s.reasoning:
                message["reasoning_content"] = s.reasoning
            logprobs = None
            if body.get("logprobs") and not tool_calls:
                pieces = split_reply(text, s.chunks)
                logprobs = {"content": [_logprob(p) for p in pieces], "refusal": None}
            answer: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": logprobs,
                        "finish_reason": finish,
                    }
                ],
                "service_tier": "default",
                "system_fingerprint": "fp_fake",
            }
            n = body.get("n") or 1
            if n > 1:  # n answers: the same one n times, each counted
                answer["choices"] = [{**answer["choices"][0], "index": i} for i in range(n)]
                usage["completion_tokens"] *= n
                usage["total_tokens"] = prompt + usage["completion_tokens"]
            if not s.no_usage:
                answer["usage"] = usage
            return web.Response(body=orjson.dumps(answer), content_type="application/json")

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        resp = await self._stream_start(request, "text/event-stream; charset=utf-8")

        def chunk(
            delta: dict[str, Any], finish_reason: str | None = None, logprobs: Any = None
        ) -> bytes:
            c: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "service_tier": "default",
                "system_fingerprint": "fp_fake",
                "choices": [
                    {
                        "index": 0,
                        "delta": delta,
                        "logprobs": logprobs,
                        "finish_reason": finish_reason,
                    }
                ],
            }
            if include_usage:
                c["usage"] = None
            return b"data: " + orjson.dumps(c) + b"\n\n"

        try:
            await resp.write(chunk({"role": "assistant", "content": "", "refusal": None}))
            for piece in split_reply(s.reasoning or "", 3):
                await resp.write(chunk({"reasoning_content": piece}))
            if tool_calls:
                call = tool_calls[0]
                pieces = split_reply(call["function"]["arguments"], 3)
                head = {
                    "index": 0,
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["function"]["name"], "arguments": ""},
                }
                await resp.write(chunk({"tool_calls": [head]}))
                for piece in pieces:
                    await self._pause(s.per_chunk_s)
                    await resp.write(
                        chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
                    )
            else:
                for sent, piece in enumerate(split_reply(text, s.chunks)):
                    if s.cut_after is not None and sent >= s.cut_after:
                        self._cut(request)
                        return resp
                    await self._pause(s.per_chunk_s)
                    lp = {"content": [_logprob(piece)], "refusal": None}
                    await resp.write(
                        chunk({"content": piece}, logprobs=lp if body.get("logprobs") else None)
                    )
            await resp.write(chunk({}, finish))
            if include_usage and not s.no_usage:
                final = {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "service_tier": "default",
                    "system_fingerprint": "fp_fake",
                    "choices": [],
                    "usage": usage,
                }
                await resp.write(b"data: " + orjson.dumps(final) + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            self.cancelled += 1
            raise
        return resp

    async def _openai_responses(self, request: web.Request) -> web.StreamResponse:
        return await openai_responses(self, request)

    async def _openai_embed(self, request: web.Request) -> web.Response:
        body = await self._receive(request)
        status = self._should_fail()
        await self._pause(self.switches.first_byte_s)
        if status is not None:
            return self._openai_error(status)
        if not isinstance(body, dict) or "input" not in body:
            return self._openai_error(400)
        inputs = body["input"]
        if isinstance(inputs, str) or (inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        dims = int(body.get("dimensions") or self.switches.dimensions)
        b64 = body.get("encoding_format") == "base64"
        data = []
        tokens = 0
        for i, item in enumerate(inputs):
            text = item if isinstance(item, str) else " ".join(map(str, item))
            tokens += count_tokens(text) if isinstance(item, str) else len(item)
            vec = fake_embedding(text, dims)
            emb: Any = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode() if b64 else vec
            data.append({"object": "embedding", "index": i, "embedding": emb})
        answer: dict[str, Any] = {"object": "list", "data": data, "model": body.get("model")}
        if not self.switches.no_usage:
            answer["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def _openai_models(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "fake"}],
            }
        )

    # --- Anthropic ----------------------------------------------------------------------

    def _anthropic_error(self, status: int) -> web.Response:
        kinds = {
            400: ("invalid_request_error", "Bad request"),
            401: ("authentication_error", "invalid x-api-key"),
            429: ("rate_limit_error", "Number of requests has exceeded your rate limit"),
            500: ("api_error", "Internal server error"),
            529: ("overloaded_error", "Overloaded"),
        }
        typ, message = kinds.get(status, ("api_error", "error"))
        headers = {"request-id": "req_fake"}
        if status == 429 and self.switches.retry_after is not None:
            headers["retry-after"] = str(self.switches.retry_after)
        body = {"type": "error", "error": {"type": typ, "message": message}}
        return web.Response(
            status=status, body=orjson.dumps(body), headers=headers, content_type="application/json"
        )

    def _tool_call(self, body: dict[str, Any]) -> dict[str, Any] | None:
        s = self.switches
        if s.tool_call and s.answer_tool_results and _ends_with_tool_result(body):
            return None
        return s.tool_call

    def _forced_tool(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """As Anthropic does: a `tool_choice` naming a tool makes the answer that tool's
        call; its input is the reply switch when that is a JSON object."""
        choice = body.get("tool_choice") or {}
        if choice.get("type") != "tool":
            return None
        try:
            args = orjson.loads(self.switches.reply)
        except orjson.JSONDecodeError:
            args = {}
        return {"name": choice.get("name", ""), "arguments": args if isinstance(args, dict) else {}}

    async def _anthropic_messages(self, request: web.Request) -> web.StreamResponse:
        body = await self._receive(request)
        status = self._should_fail()
        if status is not None:
            await self._pause(self.switches.first_byte_s)
            return self._anthropic_error(status)
        if (
            not isinstance(body, dict)
            or not body.get("messages")
            or not isinstance(body.get("max_tokens"), int)
        ):
            return self._anthropic_error(400)
        s = self.switches
        await self._pause(s.first_byte_s)
        model = self._model(body)
        mid = f"msg_fake{self.calls:08d}"
        tool_call = self._tool_call(body) or self._forced_tool(body)
        prompt, out, cached, written = self._usage(body, s.reply)
        # Anthropic's input_tokens exclude the cache-read and cache-write parts.
        plain_input = max(0, prompt - cached - written)
        stop_reason = "tool_use" if tool_call else "end_turn"
        if not body.get("stream"):
            content: list[dict[str, Any]] = []
            if tool_call:
                content.append(
                    {
                        "type": "tool_use",
                        "id": "toolu_fake0001",
                        "name": tool_call["name"],
                        "input": tool_call.get("arguments", {}),
                    }
                )
            else:
                content.append({"type": "text", "text": s.reply})
            if s.reasoning:
                thought = {"type": "thinking", "thinking": s.reasoning, "signature": "sig_fake"}
                content.insert(0, thought)
            answer: dict[str, Any] = {
                "id": mid,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": stop_reason,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": plain_input,
                    "cache_creation_input_tokens": written,
                    "cache_read_input_tokens": cached,
                    "output_tokens": out,
                    "service_tier": "standard",
                },
            }
            if s.no_usage:
                answer["usage"] = {}
            return web.Response(body=orjson.dumps(answer), content_type="application/json")

        resp = await self._stream_start(request, "text/event-stream; charset=utf-8")

        def event(name: str, data: dict[str, Any]) -> bytes:
            return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

        start_usage: dict[str, Any] = {
            "input_tokens": plain_input,
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": cached,
            "output_tokens": 1,
            "service_tier": "standard",
        }
        try:
            await resp.write(
                event(
                    "message_start",
                    {
                        "type": "message_start",
                        "message": {
                            "id": mid,
                            "type": "message",
                            "role": "assistant",
                            "model": model,
                            "content": [],
                            "stop_reason": None,
                            "stop_sequence": None,
                            "usage": {} if s.no_usage else start_usage,
                        },
                    },
                )
            )
            base = 1 if s.reasoning else 0  # the answer's block follows the thinking one
            if s.reasoning:
                await resp.write(self._anthropic_thinking(event, s.reasoning))
            if tool_call:
                block = {
                    "type": "tool_use",
                    "id": "toolu_fake0001",
                    "name": tool_call["name"],
                    "input": {},
                }
                await resp.write(
                    event(
                        "content_block_start",
                        {"type": "content_block_start", "index": base, "content_block": block},
                    )
                )
                await resp.write(event("ping", {"type": "ping"}))
                for piece in split_reply(orjson.dumps(tool_call.get("arguments", {})).decode(), 3):
                    await self._pause(s.per_chunk_s)
                    await resp.write(
                        event(
                            "content_block_delta",
                            {
                                "type": "content_block_delta",
                                "index": base,
                                "delta": {"type": "input_json_delta", "partial_json": piece},
                            },
                        )
                    )
            else:
                await resp.write(
                    event(
                        "content_block_start",
                        {
                            "type": "content_block_start",
                            "index": base,
                            "content_block": {"type": "text", "text": ""},
                        },
                    )
                )
                await resp.write(event("ping", {"type": "ping"}))
                for sent, piece in enumerate(split_reply(s.reply, s.chunks)):
                    if s.cut_after is not None and sent >= s.cut_after:
                        self._cut(request)
                        return resp
                    await self._pause(s.per_chunk_s)
                    await resp.write(
                        event(
                            "content_block_delta",
                            {
                                "type": "content_block_delta",
                                "index": base,
                                "delta": {"type": "text_delta", "text": piece},
                            },
                        )
                    )
            await resp.write(
                event("content_block_stop", {"type": "content_block_stop", "index": base})
            )
            await resp.write(
                event(
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                        "usage": {} if s.no_usage else {"output_tokens": out},
                    },
                )
            )
            await resp.write(event("message_stop", {"type": "message_stop"}))
            await resp.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            self.cancelled += 1
            raise
        return resp

    @staticmethod
    def _anthropic_thinking(event: Any, reasoning: str) -> bytes:
        """A thinking block at index 0, as extended thinking streams it."""
        block = {"type": "thinking", "thinking": "", "signature": ""}
        out = event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": block},
        )
        for piece in split_reply(reasoning, 3):
            delta = {"type": "thinking_delta", "thinking": piece}
            out += event(
                "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
            )
        delta = {"type": "signature_delta", "signature": "sig_fake"}
        out += event(
            "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
        )
        return out + event("content_block_stop", {"type": "content_block_stop", "index": 0})

    async def _anthropic_count_tokens(self, request: web.Request) -> web.Response:
        body = await self._receive(request)
        status = self._should_fail()
        if status is not None:
            return self._anthropic_error(status)
        if not isinstance(body, dict) or not body.get("messages") or not body.get("model"):
            return self._anthropic_error(400)
        # A count the gateway cannot guess (its estimate is length-based): + 1000.
        tokens = count_tokens(prompt_text(body)) + 1000
        return web.Response(
            body=orjson.dumps({"input_tokens": tokens}),
            headers={"request-id": f"req_fake{self.calls:08d}"},
            content_type="application/json",
        )

    # --- Ollama -------------------------------------------------------------------------

    def _ollama_error(self, status: int) -> web.Response:
        messages = {
            404: "model not found, try pulling it first",
            429: "too many requests",
            500: "llama runner process has terminated",
            503: "server busy, please try again.  maximum pending requests exceeded",
        }
        headers = {}
        if status == 429 and self.switches.retry_after is not None:
            headers["Retry-After"] = str(self.switches.retry_after)
        return web.Response(
            status=status,
            body=orjson.dumps({"error": messages.get(status, "error")}),
            headers=headers,
            content_type="application/json",
        )

    async def _ollama_chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._receive(request)
        status = self._should_fail()
        if status is not None:
            await self._pause(self.switches.first_byte_s)
            return self._ollama_error(status)
        if not isinstance(body, dict) or not body.get("messages"):
            return web.Response(
                status=400,
                body=b'{"error":"messages are required"}',
                content_type="application/json",
            )
        s = self.switches
        await self._pause(s.first_byte_s)
        tool_call = self._tool_call(body)
        model = self._model(body)
        prompt, out, _, _ = self._usage(body, s.reply)

        def stamp() -> str:
            return time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())

        tool_calls = None
        if tool_call:
            tool_calls = [
                {
                    "function": {
                        "name": tool_call["name"],
                        "arguments": tool_call.get("arguments", {}),
                    }
                }
            ]
        final: dict[str, Any] = {
            "model": model,
            "created_at": stamp(),
            "message": {"role": "assistant", "content": ""},
            "done_reason": "stop",
            "done": True,
            "total_duration": 4_883_583_458,
            "load_duration": 1_334_875,
        }
        if not s.no_usage:
            final |= {
                "prompt_eval_count": prompt,
                "prompt_eval_duration": 342_546_000,
                "eval_count": out,
                "eval_duration": 4_535_599_000,
            }
        if body.get("stream") is False:
            final["message"] = {"role": "assistant", "content": "" if tool_calls else s.reply}
            if tool_calls:
                final["message"]["tool_calls"] = tool_calls
            return web.Response(body=orjson.dumps(final), content_type="application/json")

        resp = await self._stream_start(request, "application/x-ndjson")
        try:
            if tool_calls:
                msg = {"role": "assistant", "content": "", "tool_calls": tool_calls}
                line = {"model": model, "created_at": stamp(), "message": msg, "done": False}
                await resp.write(orjson.dumps(line) + b"\n")
            else:
                for sent, piece in enumerate(split_reply(s.reply, s.chunks)):
                    if s.cut_after is not None and sent >= s.cut_after:
                        self._cut(request)
                        return resp
                    await self._pause(s.per_chunk_s)
                    line = {
                        "model": model,
                        "created_at": stamp(),
                        "message": {"role": "assistant", "content": piece},
                        "done": False,
                    }
                    await resp.write(orjson.dumps(line) + b"\n")
            await resp.write(orjson.dumps(final) + b"\n")
            await resp.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            self.cancelled += 1
            raise
        return resp

    async def _ollama_embed(self, request: web.Request) -> web.Response:
        body = await self._receive(request)
        status = self._should_fail()
        await self._pause(self.switches.first_byte_s)
        if status is not None:
            return self._ollama_error(status)
        inputs = body.get("input") if isinstance(body, dict) else None
        if isinstance(inputs, str):
            inputs = [inputs]
        if not inputs:
            return web.Response(
                status=400, body=b'{"error":"input is required"}', content_type="application/json"
            )
        dims = int(body.get("dimensions") or self.switches.dimensions)
        answer: dict[str, Any] = {
            "model": body.get("model"),
            "embeddings": [fake_embedding(t, dims) for t in inputs],
            "total_duration": 14_143_917,
            "load_duration": 1_019_500,
        }
        if not self.switches.no_usage:
            answer["prompt_eval_count"] = sum(count_tokens(t) for t in inputs)
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def _ollama_tags(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "models": [
                    {
                        "name": "llama3.2:latest",
                        "model": "llama3.2:latest",
                        "modified_at": "2025-01-01T00:00:00Z",
                        "size": 2019393189,
                        "digest": "a80c4f17acd5",
                        "details": {
                            "format": "gguf",
                            "family": "llama",
                            "parameter_size": "3.2B",
                            "quantization_level": "Q4_K_M",
                        },
                    }
                ]
            }
        )


def cheap_and_strong(cheap: FakeUpstream, strong: FakeUpstream) -> str:
    """The `providers:` and `models:` of a config with two models to route between: `cheap`
    (the OpenAI wire, $1 / $2 per million tokens) and `strong` (Anthropic's, $3 / $15)."""
    return f"""providers:
  - {{name: p0, kind: openai, base_url: "{cheap.url}", api_key: k0, max_retries: 0}}
  - {{name: p1, kind: anthropic, base_url: "{strong.url}", api_key: k1, max_retries: 0}}
models:
  - {{name: cheap, provider: p0, model: small, price: {{input_per_mtok: 1, output_per_mtok: 2}}}}
  - {{name: strong, provider: p1, model: big, price: {{input_per_mtok: 3, output_per_mtok: 15}}}}"""
