"""The interface every client protocol implements: four things, nothing else.

A client protocol (OpenAI Chat Completions, Anthropic Messages, the Responses API,
`/v1/completions`) is an adapter between the bytes a client sends and the gateway's own forms
(`ChatRequest`, `ChatAnswer`, `StreamEvent`). The server's chat endpoint is written once
against this interface (`server/chat.py`); no code outside the adapter knows which protocol it
speaks.

    parse_request(raw, headers)  -> ChatRequest        (raise InvalidRequest on bad input)
    encode_answer(answer, ctx)   -> bytes              (a whole answer, JSON)
    stream_encoder(request, ctx) -> StreamEncoder      (start / events / end / error, SSE)
    encode_error(err)            -> bytes              (the protocol's own error shape)

To add one: write a class with these methods (see `protocols/openai.py`), then mount it:
`server.chat.add_chat_endpoint(app, "/v1/completions", CompletionsProtocol())`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from hybridfast.errors import GatewayError
from hybridfast.pipeline.context import RequestContext
from hybridfast.types import ChatAnswer, ChatRequest, StreamEvent


class StreamEncoder(Protocol):
    """One streamed answer's encoder (it may keep state: open blocks, the finish reason)."""

    def start(self) -> bytes:
        """The bytes before the first event (a role chunk, `message_start`, ...)."""
        ...

    def events(self, batch: list[StreamEvent]) -> bytes:
        """One batch of events; b"" when there is nothing to send."""
        ...

    def end(self, ctx: RequestContext) -> bytes:
        """The closing events; `ctx` has the exact usage and cost (`ctx.meta()`)."""
        ...

    def error(self, err: GatewayError) -> bytes:
        """An error event for a stream that already started."""
        ...


class ClientProtocol(Protocol):
    """A client-side API: parse a request, encode an answer, a stream and an error."""

    # A short stable name, for logs and metrics ("openai", "anthropic", "responses").
    name: str

    def parse_request(self, raw: bytes, headers: Mapping[str, str]) -> ChatRequest:
        """The body as the gateway's request; `InvalidRequest` names what is wrong."""
        ...

    def encode_answer(self, answer: ChatAnswer, ctx: RequestContext) -> bytes:
        """A whole answer; `ctx.route` is the model the client asked for."""
        ...

    def stream_encoder(self, request: ChatRequest, ctx: RequestContext) -> StreamEncoder:
        """An encoder for one streamed answer."""
        ...

    def encode_error(self, err: GatewayError) -> bytes:
        """`err` in this protocol's error body (code, message with the hint)."""
        ...
