"""OpenAI's embeddings API on the wire: the response body. (Requests are checked by
`hybridfast.embeddings.pipeline.parse_request`.)"""

from __future__ import annotations

import base64
from typing import Any

import orjson

from hybridfast.types import EmbeddingResult


def encode_response(result: EmbeddingResult, *, base64_format: bool) -> bytes:
    """The OpenAI response body; vectors go to orjson as NumPy rows (no Python floats).
    `base64`: the float32 bytes of each vector, little-endian (what the official SDK asks
    for by default)."""
    vectors = result.vectors
    data: list[dict[str, Any]]
    if base64_format:
        little = vectors.astype("<f4", copy=False)
        data = [
            {"object": "embedding", "index": i, "embedding": base64.b64encode(row).decode()}
            for i, row in enumerate(little)
        ]
    else:
        data = [
            {"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(vectors)
        ]
    return orjson.dumps(
        {
            "object": "list",
            "data": data,
            "model": result.model,
            "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens},
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
