"""Embeddings: throughput and latency through `POST /v1/embeddings` of a real `serve` (MiniLM,
1/16/64 concurrent clients, dynamic batching on and off), the native model against the same
forward pass in NumPy and against sentence-transformers in-process (when it is installed:
it is not a dependency), the hashing embedder over HTTP, and base64 vs float encoding.

Two `serve` processes run side by side (batching on / off); each request carries one unique
text, so the per-text cache never answers. Everything shares the machine's cores, so only
ratios within one run are gated (`benches/floors/embed.toml`); absolute figures (texts/s,
p50/p99 ms) are stored in `extra_info` for reading.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from tests.fakes.server import RunningServer, start_server

from hybridfast.embeddings.local import load_embedder, minilm_dir
from hybridfast.embeddings.pipeline import EmbeddingResult, builtin_deployment
from hybridfast.protocols.embeddings import encode_response

WORDS = [
    "gateway",
    "budget",
    "cache",
    "router",
    "ledger",
    "model",
    "token",
    "stream",
    "vector",
    "batch",
    "latency",
    "price",
    "request",
    "answer",
    "provider",
    "local",
    "cloud",
    "team",
    "key",
    "index",
    "search",
    "query",
    "document",
    "user",
]
_counter = itertools.count()


def unique_texts(n: int, words: int = 10) -> list[str]:
    """Distinct sentences of about `words` + 4 tokens each (never seen by the cache)."""
    out = []
    for _ in range(n):
        i = next(_counter)
        picked = [WORDS[(i * 7 + j * 13) % len(WORDS)] for j in range(words)]
        out.append(f"request {i}: " + " ".join(picked))
    return out


async def _load(
    url: str,
    model: str,
    concurrency: int,
    texts: list[str],
    encoding: str = "float",
    per_request: int = 1,
) -> dict[str, float]:
    import aiohttp

    latencies: list[float] = []
    queue = iter([texts[i : i + per_request] for i in range(0, len(texts), per_request)])
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker() -> None:
            for text in queue:
                started = time.perf_counter()
                async with session.post(
                    f"{url}/v1/embeddings",
                    json={"model": model, "input": text, "encoding_format": encoding},
                ) as resp:
                    await resp.read()
                    assert resp.status == 200, resp.status
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "texts_per_s": round(len(texts) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 2),
    }


def load(
    url: str,
    model: str,
    concurrency: int,
    n: int,
    encoding: str = "float",
    per_request: int = 1,
) -> dict[str, float]:
    """`n` unique texts, `per_request` per request, over `concurrency` connections; the
    latencies are per request."""
    # Warm the connection pool and the model's first batch outside the measurement.
    asyncio.run(_load(url, model, min(concurrency, 4), unique_texts(4)))
    return asyncio.run(_load(url, model, concurrency, unique_texts(n), encoding, per_request))


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, RunningServer]]:
    base = "ledger: {backend: memory}\nserver: {log_level: warning}\n"
    with (
        start_server(base + "embeddings: {cache: false, max_batch: 64, max_wait_ms: 2}\n") as on,
        start_server(base + "embeddings: {cache: false, batching: false}\n") as off,
    ):
        yield {"on": on, "off": off}


# Texts per phase: enough for a stable rate, few enough for a 2-core CI box (≈300 texts/s).
PHASE_TEXTS = {1: 96, 16: 256, 64: 384}


@pytest.mark.parametrize("concurrency", [1, 16, 64])
def test_embed_http_minilm(
    benchmark: Any, servers: dict[str, RunningServer], concurrency: int
) -> None:
    n = PHASE_TEXTS[concurrency]
    unbatched = load(servers["off"].url, "minilm", concurrency, n)
    batched: dict[str, float] = {}

    def run() -> None:
        batched.update(load(servers["on"].url, "minilm", concurrency, n))

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update({f"batched_{k}": v for k, v in batched.items()})
    benchmark.extra_info.update({f"unbatched_{k}": v for k, v in unbatched.items()})
    benchmark.extra_info["speedup_vs_unbatched"] = round(
        batched["texts_per_s"] / unbatched["texts_per_s"], 3
    )


def test_embed_http_minilm_16x16(benchmark: Any, servers: dict[str, RunningServer]) -> None:
    """16 concurrent clients sending 16 texts per request (how bulk users call it), base64."""
    figures: dict[str, float] = {}
    benchmark.pedantic(
        lambda: figures.update(
            load(servers["on"].url, "minilm", 16, 512, encoding="base64", per_request=16)
        ),
        rounds=1,
    )
    benchmark.extra_info.update(figures)


def test_embed_http_hashing_16(benchmark: Any, servers: dict[str, RunningServer]) -> None:
    figures: dict[str, float] = {}
    benchmark.pedantic(
        lambda: figures.update(load(servers["on"].url, "hashing", 16, 1024)), rounds=1
    )
    benchmark.extra_info.update(figures)


# --- in-process: the model itself -------------------------------------------------------

BATCH = unique_texts(64)


def test_embed_minilm_native(benchmark: Any) -> None:
    model = load_embedder("minilm", device="cpu")
    model.embed(BATCH[:4])
    benchmark.pedantic(model.embed, args=(BATCH,), rounds=3, iterations=1)
    benchmark.extra_info["texts_per_s"] = round(len(BATCH) / benchmark.stats.stats.median, 1)


def test_embed_minilm_numpy(benchmark: Any) -> None:
    """The same forward pass as plain NumPy array code (the GPU path's code, on the CPU)."""
    from hybridfast.embeddings.gpu import GpuBert

    model = GpuBert.load(minilm_dir(), xp=np)
    ids = load_embedder("minilm", device="cpu").tokenize(BATCH)  # type: ignore[attr-defined]
    model.embed_ids(ids[:4])
    benchmark.pedantic(model.embed_ids, args=(ids,), rounds=2, iterations=1)
    benchmark.extra_info["texts_per_s"] = round(len(BATCH) / benchmark.stats.stats.median, 1)


def test_embed_sentence_transformers(benchmark: Any) -> None:
    """sentence-transformers in-process, same texts and machine (skipped when absent: PyTorch
    is not a dependency; install it in a throwaway venv to compare)."""
    st = pytest.importorskip(
        "sentence_transformers", reason="sentence-transformers is not installed: not compared"
    )
    model = st.SentenceTransformer(str(minilm_dir()), device="cpu")
    model.encode(BATCH[:4])
    benchmark.pedantic(model.encode, args=(BATCH,), kwargs={"batch_size": 64}, rounds=3)
    benchmark.extra_info["texts_per_s"] = round(len(BATCH) / benchmark.stats.stats.median, 1)


# --- response encoding -----------------------------------------------------------------


def _result() -> EmbeddingResult:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((64, 384)).astype(np.float32)
    return EmbeddingResult(
        vectors=vectors,
        model="minilm",
        deployment=builtin_deployment("minilm"),
        prompt_tokens=640,
        cost=0,
        cached=0,
        request_id="bench",
    )


def test_embed_encode_float(benchmark: Any) -> None:
    result = _result()
    body = benchmark(encode_response, result, base64_format=False)
    benchmark.extra_info["bytes"] = len(body)


def test_embed_encode_base64(benchmark: Any) -> None:
    result = _result()
    body = benchmark(encode_response, result, base64_format=True)
    benchmark.extra_info["bytes"] = len(body)
