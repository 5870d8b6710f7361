"""`POST /v1/embeddings` in-process (aiohttp test client, the real app and Gateway): the
built-in local models, both encodings, token input, the per-text exact cache in front of
provider deployments, fallback, usage and cost into the ledger, bad input."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from hybridfast.config import parse_config
from hybridfast.embeddings.local import load_embedder
from hybridfast.pipeline.gateway import Gateway
from hybridfast.routing import build_router
from hybridfast.server.app import create_app
from tests.conftest import fake_config
from tests.fakes import FakeUpstream
from tests.fakes.parts import RecordingLedger, RecordingRouter
from tests.fakes.upstream import count_tokens, fake_embedding

# fake_config prices every deployment at $1 per million input tokens.
PICO_IN = 1_000_000


class Harness:
    def __init__(self, client: TestClient, gateway: Gateway, ledger: RecordingLedger) -> None:
        self.client = client
        self.gateway = gateway
        self.ledger = ledger
        self.router: RecordingRouter = gateway.router  # type: ignore[assignment]

    async def embed(self, status: int = 200, headers: Any = None, **body: Any) -> Any:
        resp = await self.client.post("/v1/embeddings", json=body, headers=headers)
        data = await resp.json()
        assert resp.status == status, data
        return resp, data


Make = Callable[..., Awaitable[Harness]]


@pytest.fixture
def gateway(aiohttp_client: Any) -> Make:
    async def make(config_text: str = "") -> Harness:
        if "ledger:" not in config_text:  # nothing written in the working directory
            config_text += "\nledger: {backend: memory}\n"
        config = parse_config(config_text).config
        ledger = RecordingLedger()
        gw = Gateway(config, ledger=ledger)
        gw._given = (RecordingRouter(build_router(config, gw.deployments)), ledger, gw._given[2])
        client = await aiohttp_client(create_app(config, gateway=gw))
        return Harness(client, gw, ledger)

    return make


def vectors(data: Any) -> np.ndarray:
    rows = []
    for i, item in enumerate(data["data"]):
        assert item["index"] == i
        assert item["object"] == "embedding"
        emb = item["embedding"]
        rows.append(
            np.frombuffer(base64.b64decode(emb), dtype="<f4") if isinstance(emb, str) else emb
        )
    return np.array(rows, dtype=np.float32)


async def test_builtin_minilm_without_any_config(gateway: Make) -> None:
    h = await gateway()
    texts = ["The cat sits on the mat.", "Quantum chromodynamics", ""]
    resp, data = await h.embed(model="minilm", input=texts)
    want = load_embedder("minilm").embed(texts)
    np.testing.assert_allclose(vectors(data), want, atol=1e-6)
    assert data["model"] == "minilm"
    assert data["object"] == "list"
    tokens = sum(len(ids) for ids in load_embedder("minilm").tokenize(texts))  # type: ignore[attr-defined]
    assert data["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    assert resp.headers["x-hybridfast-deployment"] == "minilm#local"
    assert resp.headers["x-hybridfast-cache"] == "miss"
    assert resp.headers["x-hybridfast-cost-usd"] == "0"
    ((_, record),) = h.ledger.settled
    assert record.usage.input_tokens == tokens
    assert record.cost == 0


async def test_base64_encoding_carries_the_same_float32_vectors(gateway: Make) -> None:
    h = await gateway()
    _, as_float = await h.embed(model="minilm", input="hello world", cache="no-store")
    _, as_b64 = await h.embed(model="minilm", input="hello world", encoding_format="base64")
    assert isinstance(as_b64["data"][0]["embedding"], str)
    np.testing.assert_array_equal(vectors(as_float), vectors(as_b64))


async def test_repeat_texts_come_from_the_exact_cache(gateway: Make) -> None:
    h = await gateway()
    await h.embed(model="minilm", input=["alpha", "beta"])
    resp, data = await h.embed(model="minilm", input=["beta", "alpha"])
    assert resp.headers["x-hybridfast-cache"] == "hit"
    assert resp.headers["x-hybridfast-cache-hits"] == "2"
    np.testing.assert_allclose(vectors(data), load_embedder("minilm").embed(["beta", "alpha"]))
    resp, _ = await h.embed(model="minilm", input=["beta"], headers={"Cache-Control": "no-cache"})
    assert resp.headers["x-hybridfast-cache"] == "bypass"  # not read, as for chat


async def test_token_array_input(gateway: Make) -> None:
    h = await gateway()
    # MiniLM's own ids, said so.
    ids = load_embedder("minilm").tokenize(["hello world"])[0][1:-1]  # type: ignore[attr-defined]
    _, one = await h.embed(model="minilm", input=ids, token_encoding="native")
    _, many = await h.embed(model="minilm", input=[ids, ids], token_encoding="native")
    _, text = await h.embed(model="minilm", input="hello world")
    np.testing.assert_allclose(vectors(one)[0], vectors(text)[0], atol=1e-6)
    assert len(many["data"]) == 2
    await h.embed(400, model="minilm", input=[[999_999]], token_encoding="native")
    await h.embed(400, model="hashing", input=[[1, 2]])


async def test_openai_token_ids_are_read_as_text_for_minilm(gateway: Make) -> None:
    """What LangChain's OpenAIEmbeddings sends: cl100k_base ids, whatever the model. Read as
    MiniLM's own ids they gave wrong vectors (cosine 0.17 against the text)."""
    import bpe_openai  # type: ignore[import-untyped]

    h = await gateway()
    text = "The quick brown fox jumps over the lazy dog."
    ids = bpe_openai.get_encoding("cl100k_base").encode(text)
    _, from_ids = await h.embed(model="minilm", input=[ids])
    _, from_text = await h.embed(model="minilm", input=[text])
    np.testing.assert_allclose(vectors(from_ids)[0], vectors(from_text)[0], atol=1e-6)
    # The same ids as MiniLM's own vocabulary are another text: no cache entry is shared.
    hello = bpe_openai.get_encoding("cl100k_base").encode("hello world")
    _, cl100k = await h.embed(model="minilm", input=[hello])
    _, native = await h.embed(model="minilm", input=[hello], token_encoding="native")
    assert not np.allclose(vectors(native)[0], vectors(cl100k)[0], atol=1e-3)
    await h.embed(400, model="minilm", input=[[2**31 - 1]])
    await h.embed(400, model="minilm", input="x", token_encoding="latin-1")


async def test_hashing_model_and_its_dimensions(gateway: Make) -> None:
    h = await gateway()
    _, data = await h.embed(model="hashing", input=["a b c"], dimensions=64)
    assert len(data["data"][0]["embedding"]) == 64
    _, data = await h.embed(model="hashing", input=["a b c"])
    assert len(data["data"][0]["embedding"]) == 384
    await h.embed(400, model="minilm", input="x", dimensions=128)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"model": "minilm", "input": []}, "empty"),
        ({"model": "minilm", "input": ["ok", 3]}, "input"),
        ({"model": "minilm", "input": [{"text": "x"}]}, "input"),
        ({"model": "minilm", "input": None}, "input"),
        ({"model": "minilm"}, "required"),
        ({"input": "x"}, "model"),
        ({"model": "minilm", "input": ["x"] * 2049}, "2049"),
        ({"model": "minilm", "input": "x" * 40_000}, "characters"),
        ({"model": "minilm", "input": "x", "dimensions": 0}, "dimensions"),
        ({"model": "minilm", "input": "x", "dimensions": True}, "dimensions"),
        ({"model": "minilm", "input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"model": "minilm", "input": "x", "priority": "urgent"}, "priority"),
        ({"model": "minilm", "input": [[]]}, "empty"),
    ],
)
async def test_bad_input_is_400_with_a_code(
    gateway: Make, body: dict[str, Any], fragment: str
) -> None:
    h = await gateway()
    resp = await h.client.post("/v1/embeddings", json=body)
    data = await resp.json()
    assert resp.status == 400, data
    assert data["error"]["code"] == "ERR_INVALID_REQUEST"
    assert fragment in data["error"]["message"]
    assert not h.ledger.settled


async def test_malformed_json_and_unknown_model(gateway: Make) -> None:
    h = await gateway()
    resp = await h.client.post("/v1/embeddings", data=b"{not json")
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "ERR_INVALID_REQUEST"
    resp = await h.client.post("/v1/embeddings", json={"model": "nope", "input": "x"})
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "ERR_MODEL_NOT_FOUND"


def embed_config(*fakes: FakeUpstream) -> str:
    text = re.sub(r"\n    capabilities: \[[^\]]*\]", "", fake_config(*fakes, name="emb"))
    return text.replace("    model: ", "    capabilities: [embeddings]\n    model: ")


async def test_provider_embeddings_with_partial_cache(gateway: Make, fake_openai: Any) -> None:
    h = await gateway(embed_config(fake_openai))
    _, first = await h.embed(model="emb", input=["one", "two"])
    np.testing.assert_allclose(
        vectors(first),
        [fake_embedding(t, fake_openai.dimensions) for t in ["one", "two"]],
        atol=1e-6,
    )
    resp, second = await h.embed(model="emb", input=["two", "three", "one", "four"])
    # Only the texts not seen before went upstream, in their order.
    assert fake_openai.requests[-1].body["input"] == ["three", "four"]
    assert resp.headers["x-hybridfast-cache-hits"] == "2"
    np.testing.assert_allclose(
        vectors(second),
        [fake_embedding(t, fake_openai.dimensions) for t in ["two", "three", "one", "four"]],
        atol=1e-6,
    )
    upstream_tokens = count_tokens("three") + count_tokens("four")
    _, record = h.ledger.settled[-1]
    assert record.usage.input_tokens == upstream_tokens
    assert record.cost == upstream_tokens * PICO_IN
    assert resp.headers["x-hybridfast-cost-usd"] != "0"
    # A fully cached request costs nothing and calls nobody.
    calls = len(fake_openai.requests)
    resp, _ = await h.embed(model="emb", input=["four", "one"])
    assert len(fake_openai.requests) == calls
    assert resp.headers["x-hybridfast-cache"] == "hit"
    assert h.ledger.settled[-1][1].cost == 0


async def test_embeddings_without_their_cache_say_bypass(gateway: Make, fake_openai: Any) -> None:
    h = await gateway(embed_config(fake_openai) + "embeddings: {cache: false}\n")
    for _ in range(2):
        resp, _ = await h.embed(model="emb", input=["alpha"])
        assert resp.headers["x-hybridfast-cache"] == "bypass"  # nothing was looked up
    assert len(fake_openai.requests) == 2


async def test_cache_does_not_cross_tenants(gateway: Make, fake_openai: Any) -> None:
    text = embed_config(fake_openai) + (
        "keys:\n  - {key: k-a, name: a, team: red}\n  - {key: k-b, name: b, team: blue}\n"
    )
    h = await gateway(text)
    await h.embed(model="emb", input=["secret"], headers={"Authorization": "Bearer k-a"})
    resp, _ = await h.embed(model="emb", input=["secret"], headers={"Authorization": "Bearer k-b"})
    assert resp.headers["x-hybridfast-cache"] == "miss"
    assert len(fake_openai.requests) == 2


async def test_fallback_to_the_next_deployment(
    gateway: Make, fake_openai: Any, fake_ollama: Any
) -> None:
    fake_openai.fail(500)
    h = await gateway(embed_config(fake_openai, fake_ollama))
    resp, data = await h.embed(model="emb", input=["x", "y"], dimensions=16)
    assert resp.headers["x-hybridfast-deployment"] == "emb#1"
    assert fake_ollama.requests[-1].path == "/api/embed"
    np.testing.assert_allclose(vectors(data), [fake_embedding(t, 16) for t in "xy"], atol=1e-6)
    assert ("finished", "emb#0", False) in h.router.events
    assert ("finished", "emb#1", True) in h.router.events
    assert len(h.ledger.settled) == 1
    assert len(h.ledger.released) == 1


async def test_every_deployment_failing_is_a_gateway_error(gateway: Make, fake_openai: Any) -> None:
    fake_openai.fail(500)
    h = await gateway(embed_config(fake_openai))
    resp = await h.client.post("/v1/embeddings", json={"model": "emb", "input": "x"})
    assert resp.status >= 500
    assert (await resp.json())["error"]["code"] == "ERR_PROVIDER_UNAVAILABLE"
    assert not h.ledger.held


async def test_concurrent_requests_share_batches(gateway: Make) -> None:
    h = await gateway("embeddings:\n  max_wait_ms: 20\n")
    texts = [f"request number {i}" for i in range(24)]
    results = await asyncio.gather(*(h.embed(model="minilm", input=t) for t in texts))
    got = np.array([vectors(data)[0] for _, data in results])
    np.testing.assert_allclose(got, load_embedder("minilm").embed(texts), atol=1e-5)
    batcher = next(iter(h.gateway.engine._batchers.values()))
    assert batcher.texts == 24
    assert batcher.batches < 24


async def test_batching_off_gives_the_same_vectors(gateway: Make) -> None:
    h = await gateway("embeddings:\n  batching: false\n")
    _, data = await h.embed(model="minilm", input=["same either way"])
    np.testing.assert_allclose(
        vectors(data), load_embedder("minilm").embed(["same either way"]), atol=1e-6
    )


async def test_full_queue_is_429_with_retry_after(gateway: Make) -> None:
    h = await gateway("embeddings: {max_queue: 2, max_batch: 2}\n")
    # Larger than the queue, but the queue is empty: admitted.
    await h.embed(model="minilm", input=["a", "b", "c"])
    responses = await asyncio.gather(
        *(
            h.client.post("/v1/embeddings", json={"model": "minilm", "input": [f"x{i}", f"y{i}"]})
            for i in range(24)
        )
    )
    statuses = [r.status for r in responses]
    assert 200 in statuses
    assert 429 in statuses
    refused = next(r for r in responses if r.status == 429)
    assert int(refused.headers["Retry-After"]) >= 1
    assert (await refused.json())["error"]["code"] == "ERR_RATE_LIMITED"


async def test_token_arrays_pass_through_to_providers(gateway: Make, fake_openai: Any) -> None:
    h = await gateway(embed_config(fake_openai))
    _, data = await h.embed(model="emb", input=[[1, 2, 3], [4, 5]])
    assert fake_openai.requests[-1].body["input"] == [[1, 2, 3], [4, 5]]
    assert len(data["data"]) == 2
    assert data["usage"]["prompt_tokens"] == 5
