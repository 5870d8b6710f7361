"""The OpenAI Chat Completions request (`POST /v1/chat/completions`): the fields the gateway
reads or converts for other upstreams, with their types and ranges. Every other field is
passed through untouched."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

from hybridfast.validation.schema import MAX_TOKENS, ModelName, register

NonEmpty = Annotated[str, Meta(min_length=1)]
TokenCount = Annotated[int, Meta(ge=1, le=MAX_TOKENS)]


class ImageUrl(Struct):
    url: str
    detail: str | None = None


class ContentPart(Struct):
    """One part of a message's content. `text` parts need `text`, `image_url` parts need an
    `image_url` object; other part types (audio, files) pass through."""

    type: str
    text: str | UnsetType = UNSET
    image_url: ImageUrl | UnsetType = UNSET

    def __post_init__(self) -> None:
        if self.type in ("text", "input_text") and self.text is UNSET:
            raise ValueError("a text part needs `text` (a string)")
        if self.type == "image_url" and self.image_url is UNSET:
            raise ValueError('an image_url part needs `image_url` ({"url": ...})')


class FunctionCall(Struct):
    name: str | None = None
    arguments: str | None = None


class ToolCall(Struct):
    id: str | None = None
    type: str = "function"
    function: FunctionCall | None = None


class ChatMessage(Struct):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class FunctionDefinition(Struct):
    name: NonEmpty
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ChatTool(Struct):
    type: str = "function"
    function: FunctionDefinition | UnsetType = UNSET

    def __post_init__(self) -> None:
        if self.type == "function" and self.function is UNSET:
            raise ValueError('a function tool needs `function` ({"name": ...})')


class StreamOptions(Struct):
    include_usage: bool | None = None


class ChatCompletionRequest(Struct):
    model: ModelName
    messages: Annotated[list[ChatMessage], Meta(min_length=1)]
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: TokenCount | None = None
    max_completion_tokens: TokenCount | None = None
    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    n: Annotated[int, Meta(ge=1, le=128)] | None = None
    stop: str | list[str] | None = None
    presence_penalty: Annotated[float, Meta(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Meta(ge=-2, le=2)] | None = None
    seed: Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    tools: list[ChatTool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None
    # hybridfast: "no-cache" / "no-store" / "default", or {"no-cache": true, ...}.
    cache: str | dict[str, Any] | None = None


register(
    "/v1/chat/completions",
    ChatCompletionRequest,
    "OpenAI Chat Completions (streaming with `stream: true`)",
)
register("/chat/completions", ChatCompletionRequest, "OpenAI Chat Completions (no /v1 prefix)")
