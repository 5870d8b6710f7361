"""The OpenAI embeddings request (`POST /v1/embeddings`)."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

from hybridfast.validation.schema import ModelName, register

TokenId = Annotated[int, Meta(ge=0, le=2**31 - 1)]


class EmbeddingsRequest(Struct):
    model: ModelName
    # A string, a list of strings, a list of token ids, or a list of token id lists; the
    # embeddings service checks that a list does not mix them.
    input: str | list[str | TokenId | list[TokenId]]
    dimensions: Annotated[int, Meta(ge=1, le=65_536)] | None = None
    encoding_format: Literal["float", "base64"] | None = None
    user: str | None = None
    # hybridfast: scheduling class and cache control.
    priority: Literal["interactive", "batch"] | None = None
    cache: str | dict[str, bool] | None = None


register("/v1/embeddings", EmbeddingsRequest, "OpenAI embeddings")
register("/embeddings", EmbeddingsRequest, "OpenAI embeddings (no /v1 prefix)")
