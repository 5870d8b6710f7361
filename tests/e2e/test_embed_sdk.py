"""The official OpenAI SDK's `embeddings.create` (base64 by default) against a real
`python -m hybridfast serve`: the built-in MiniLM, and an OpenAI deployment behind the
per-text cache."""

from __future__ import annotations

from typing import Any

import numpy as np
import openai
import pytest

from hybridfast.embeddings.local import load_embedder
from tests.fakes.upstream import fake_embedding

pytestmark = pytest.mark.slow


def test_openai_sdk_against_serve(serve_gateway: Any, fake_openai: Any) -> None:
    config = (
        "providers:\n"
        f"  - {{name: up, kind: openai, base_url: '{fake_openai.url}', api_key: k,\n"
        "      max_retries: 0}\n"
        "models:\n"
        "  - {name: small, provider: up, model: text-embedding-3-small,\n"
        "     capabilities: [embeddings]}\n"
        "  - {name: local-minilm, provider: local, model: minilm}\n"
        "ledger: {backend: memory}\n"
    )
    server = serve_gateway(config)
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    texts = ["The cat sits on the mat.", "Ünïcödé, accents: café!", "x" * 300]

    # Built-in name (no config entry), the SDK's default base64 encoding.
    got = client.embeddings.create(model="minilm", input=texts)
    want = load_embedder("minilm").embed(texts)
    np.testing.assert_allclose([d.embedding for d in got.data], want, atol=1e-6)
    assert got.usage.prompt_tokens > 0

    # A configured local deployment, explicit float encoding.
    got = client.embeddings.create(model="local-minilm", input=texts[0], encoding_format="float")
    np.testing.assert_allclose(got.data[0].embedding, want[0], atol=1e-6)

    # A provider deployment: the second request sends only the new text upstream.
    raw = client.embeddings.with_raw_response.create(model="small", input=["a", "b"])
    assert raw.headers["x-hybridfast-deployment"] == "small#0"
    raw = client.embeddings.with_raw_response.create(model="small", input=["b", "c", "a"])
    assert raw.headers["x-hybridfast-cache-hits"] == "2"
    assert fake_openai.requests[-1].body["input"] == ["c"]
    vectors = [d.embedding for d in raw.parse().data]
    np.testing.assert_allclose(
        vectors, [fake_embedding(t, fake_openai.dimensions) for t in "bca"], atol=1e-6
    )

    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="minilm", input=[])
    assert info.value.code == "ERR_INVALID_REQUEST"
