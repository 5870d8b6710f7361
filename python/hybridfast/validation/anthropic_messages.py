"""The Anthropic Messages request (`POST /v1/messages` and `/v1/messages/count_tokens`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

from hybridfast.validation.schema import MAX_TOKENS, ModelName, register

NonEmpty = Annotated[str, Meta(min_length=1)]


class TextBlock(Struct):
    type: Literal["text"]
    text: str
    cache_control: dict[str, Any] | None = None


class Source(Struct):
    """An image or document source: base64 data, a URL, or a file id."""

    type: str
    media_type: str | None = None
    data: str | None = None
    url: str | None = None


class ContentBlock(Struct):
    """One block of a message. The fields each type needs are checked; other block types
    (documents, server tools, thinking) pass through."""

    type: str
    text: str | UnsetType = UNSET
    source: Source | UnsetType = UNSET
    id: str | None = None
    name: str | None = None
    input: dict[str, Any] | None = None
    tool_use_id: str | None = None
    content: str | list[dict[str, Any]] | None = None
    is_error: bool | None = None
    cache_control: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.type == "text" and self.text is UNSET:
            raise ValueError("a text block needs `text` (a string)")
        if self.type in ("image", "document") and self.source is UNSET:
            raise ValueError(f"an {self.type} block needs `source` (an object)")


class AnthropicMessage(Struct):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class AnthropicTool(Struct):
    name: NonEmpty
    type: str | None = None
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    cache_control: dict[str, Any] | None = None


class ToolChoice(Struct):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Metadata(Struct):
    user_id: str | None = None


class _MessagesBase(Struct, kw_only=True):
    model: ModelName
    messages: Annotated[list[AnthropicMessage], Meta(min_length=1)]
    system: str | list[TextBlock] | None = None
    tools: list[AnthropicTool] | None = None
    tool_choice: ToolChoice | None = None
    thinking: dict[str, Any] | None = None


class MessagesRequest(_MessagesBase, kw_only=True):
    max_tokens: Annotated[int, Meta(ge=1, le=MAX_TOKENS)]
    stream: bool | None = None
    temperature: Annotated[float, Meta(ge=0, le=1)] | None = None
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    top_k: Annotated[int, Meta(ge=0, le=MAX_TOKENS)] | None = None
    stop_sequences: list[str] | None = None
    metadata: Metadata | None = None
    cache: str | dict[str, Any] | None = None


class CountTokensRequest(_MessagesBase, kw_only=True):
    pass


register(
    "/v1/messages",
    MessagesRequest,
    "Anthropic Messages (streaming with `stream: true`)",
    error_shape="anthropic",
)
register(
    "/v1/messages/count_tokens",
    CountTokensRequest,
    "Anthropic token counting",
    error_shape="anthropic",
)
