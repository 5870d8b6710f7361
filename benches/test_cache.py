"""The cache's hot paths, each against a reference measured in the same run.

- Vector lookup, 10k × 384-d clustered unit vectors (like real embeddings), one query at a
  time on one thread: the native index (HNSW past 4096 entries) against numpy brute force
  (BLAS matrix-vector product + argpartition). recall@1/@10 against the exact scan and
  p50/p99 go into `extra_info`; recall@1 is gated.
- The native exact SIMD scan against the same numpy brute force.
- The hashing embedder against a plain-Python implementation of the same features.
- Inserts into a graph-backed scope (recorded, not gated).
- End to end: a cache hit through a real `serve` process against a miss that goes to a
  zero-latency fake upstream (the hit must be the faster one).

100k and 1M figures take minutes to build on two cores, so they run only with
`HYBRIDFAST_BENCH_LARGE=1` (not gated; the README reports them).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from hybridfast._core import HashingEmbedder, VectorIndex
from hybridfast.cache import open_cache
from hybridfast.config import parse_config
from hybridfast.embeddings.local import load_embedder
from hybridfast.types import Caller, ChatAnswer, ChatRequest

DIM = 384


def clustered(n: int, seed: int = 0, clusters: int = 200) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, DIM)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)]
    x += 0.5 * rng.standard_normal((n, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


class Setup:
    def __init__(self, n: int, queries: int = 500) -> None:
        data = clustered(n + queries, seed=n)
        self.data, self.queries = data[:n], data[n:]
        self.ids = np.arange(n, dtype=np.int64)
        started = time.perf_counter()
        self.index = VectorIndex(DIM)
        self.index.add(1, self.ids, self.data)
        self.build_s = time.perf_counter() - started
        self.i = 0

    def next_query(self) -> np.ndarray:
        self.i = (self.i + 1) % len(self.queries)
        return self.queries[self.i]

    def quality(self, ef: int | None = None) -> dict[str, float]:
        approx, _ = self.index.search(1, self.queries, k=10, ef=ef)
        exact, _ = self.index.search(1, self.queries, k=10, exact=True)
        r1 = float(np.mean(approx[:, 0] == exact[:, 0]))
        r10 = float(
            np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)])
        )
        times = []
        for q in self.queries:
            t = time.perf_counter()
            self.index.search_one(1, q, 10, ef)
            times.append(time.perf_counter() - t)
        us = np.array(times) * 1e6
        return {
            "entries": len(self.ids),
            "recall_at_1": r1,
            "recall_at_10": r10,
            "p50_us": float(np.percentile(us, 50)),
            "p99_us": float(np.percentile(us, 99)),
            "build_s": self.build_s,
        }


def numpy_top10(data: np.ndarray, q: np.ndarray) -> np.ndarray:
    scores = data @ q
    top = np.argpartition(-scores, 10)[:10]
    return top[np.argsort(-scores[top])]


@pytest.fixture(scope="module")
def small() -> Setup:
    return Setup(10_000)


def test_cache_lookup_10k_native(benchmark: Any, small: Setup) -> None:
    benchmark.extra_info.update(small.quality())
    ids = benchmark(lambda: small.index.search_one(1, small.next_query(), 10))
    assert len(ids) == 10


def test_cache_lookup_10k_numpy(benchmark: Any, small: Setup) -> None:
    # One BLAS thread: the budget is per core, and OpenBLAS threads thrash on 2 shared cores.
    with threadpool_limits(1):
        top = benchmark(lambda: numpy_top10(small.data, small.next_query()))
    assert len(top) == 10


def test_cache_scan_10k_native(benchmark: Any, small: Setup) -> None:
    q = small.queries[0]
    found = benchmark(lambda: small.index.search_one(1, q, 10, exact=True))
    assert [i for i, _ in found] == numpy_top10(small.data, q).tolist()


def test_cache_insert_graph(benchmark: Any) -> None:
    data = clustered(3000, seed=7)

    def build() -> VectorIndex:
        index = VectorIndex(DIM, ann_threshold=1)
        index.add(0, np.arange(3000, dtype=np.int64), data)
        return index

    index = benchmark.pedantic(build, rounds=2, iterations=1)
    benchmark.extra_info["inserts_per_s"] = 3000 / benchmark.stats.stats.median
    assert len(index) == 3000


@pytest.mark.skipif(not os.environ.get("HYBRIDFAST_BENCH_LARGE"), reason="HYBRIDFAST_BENCH_LARGE")
@pytest.mark.parametrize("n", [100_000, 1_000_000])
def test_cache_lookup_large(benchmark: Any, n: int) -> None:
    if n == 1_000_000 and os.environ.get("HYBRIDFAST_BENCH_LARGE") != "1m":
        pytest.skip("set HYBRIDFAST_BENCH_LARGE=1m for the 1M run")
    setup = Setup(n, queries=1000)
    benchmark.extra_info.update(setup.quality())
    q = setup.queries[0]
    with threadpool_limits(1):
        t = time.perf_counter()
        for _ in range(20):
            numpy_top10(setup.data, q)
    benchmark.extra_info["numpy_us"] = (time.perf_counter() - t) / 20 * 1e6
    benchmark(lambda: setup.index.search_one(1, setup.next_query(), 10))


# --- the hashing embedder ----------------------------------------------------------------

TEXTS = [
    f"How do I {verb} a {thing} in {lang} without {extra}? ({i})"
    for i, (verb, thing, lang, extra) in enumerate(
        (v, t, lg, e)
        for v in ("sort", "reverse", "copy", "merge", "filter")
        for t in ("list", "dictionary", "string", "file")
        for lg in ("Python", "Rust", "Go", "Java", "C")
        for e in ("loops", "recursion", "a library", "memory leaks", "errors")
    )
][:400]

_WORD = re.compile(r"\w+")


def python_embed(texts: list[str], dim: int = DIM) -> np.ndarray:
    """The same kind of features as the native embedder (words, bigrams, char 3/4-grams,
    signed hashing, L2 norm) in plain Python: the reference the native one is timed against."""
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for row, text in enumerate(texts):
        v = out[row]
        words = _WORD.findall(text.lower())
        feats: list[tuple[bytes, float]] = [(w.encode(), 1.0) for w in words]
        feats += [(f"{a} {b}".encode(), 0.6) for a, b in itertools.pairwise(words)]
        for w in words:
            padded = f"<{w}>"
            for n in (3, 4):
                feats += [(padded[i : i + n].encode(), 0.3) for i in range(len(padded) - n + 1)]
        for f, weight in feats:
            h = int.from_bytes(hashlib.blake2b(f, digest_size=8).digest(), "little")
            v[(h >> 1) % dim] += weight if h & 1 else -weight
        norm = float(np.linalg.norm(v))
        if norm:
            v /= norm
    return out


def test_cache_embed_native(benchmark: Any) -> None:
    e = HashingEmbedder(DIM)
    out = benchmark(e.embed, TEXTS)
    benchmark.extra_info["texts_per_s"] = len(TEXTS) / benchmark.stats.stats.median
    assert out.shape == (len(TEXTS), DIM)


def test_cache_embed_python(benchmark: Any) -> None:
    out = benchmark.pedantic(python_embed, args=(TEXTS,), rounds=3, iterations=1)
    benchmark.extra_info["texts_per_s"] = len(TEXTS) / benchmark.stats.stats.median
    assert out.shape == (len(TEXTS), DIM)


# --- end to end: a hit through `serve` against a miss to a zero-latency upstream ----------


class Gateway:
    def __init__(self, url: str) -> None:
        import aiohttp

        self.url = url
        self.loop = asyncio.new_event_loop()
        self.session = self.loop.run_until_complete(self._session(aiohttp))
        self.n = 0

    @staticmethod
    async def _session(aiohttp: Any) -> Any:
        return aiohttp.ClientSession()

    def ask(self, text: str) -> str:
        async def go() -> str:
            body = {
                "model": "chat",
                "messages": [{"role": "user", "content": text}],
                "temperature": 0,
            }
            async with self.session.post(f"{self.url}/v1/chat/completions", json=body) as r:
                assert r.status == 200
                await r.read()
                return str(r.headers["x-hybridfast-cache"])

        return self.loop.run_until_complete(go())

    def close(self) -> None:
        self.loop.run_until_complete(self.session.close())
        self.loop.close()


@pytest.fixture(scope="module")
def gateway() -> Iterator[Gateway]:
    from tests.fakes.server import start_fake, start_server

    with start_fake("openai") as fake:
        config = f"""
providers:
  - {{name: up, kind: openai, base_url: "{fake.url}", api_key: bench, max_retries: 0}}
models:
  - {{name: chat, provider: up, model: gpt-bench}}
ledger: {{backend: memory}}
cache: {{semantic: {{embedder: hashing}}}}
"""
        with start_server(config) as server:
            g = Gateway(server.url)
            assert g.ask("warm the cache up") == "miss"
            yield g
            g.close()


def test_cache_e2e_hit(benchmark: Any, gateway: Gateway) -> None:
    result = benchmark.pedantic(gateway.ask, args=("warm the cache up",), rounds=300)
    assert result == "hit"


def test_cache_e2e_miss(benchmark: Any, gateway: Gateway) -> None:
    def miss() -> str:
        gateway.n += 1
        return gateway.ask(f"a question never asked before, number {gateway.n}")

    assert benchmark.pedantic(miss, rounds=300) == "miss"


# --- what the semantic decision adds to a cacheable lookup ---------------------------------
#
# In process, at the default config (MiniLM, every guard, the verifier at its default
# max_error_rate) over 1,000 stored questions: a cacheable miss (a question nothing answers) and a
# semantic hit (a rewording of a stored one), each timed beside the exact-only lookup the
# request makes anyway and beside embedding the same text alone. The added latency per miss
# and per hit (p50/p99) goes into `extra_info`; the gate holds the decision (search, guards,
# verifier) to a small share of the embedding it follows.

TOPICS = [f"{verb} a {thing} in {lang}" for verb, thing, lang, _ in (
    (v, t, lg, None)
    for v in ("sort", "reverse", "copy", "merge", "filter", "parse", "hash", "print")
    for t in ("list", "dictionary", "string", "file", "tuple", "set", "date", "number")
    for lg in ("Python", "Rust", "Go", "Java", "C", "Ruby", "Kotlin", "Swift")
)]  # fmt: skip


def _minilm_or_skip() -> Any:
    try:
        return load_embedder("minilm")
    except Exception as exc:
        pytest.skip(f"minilm not installed: {exc}")


class SemanticBench:
    """Two caches over the same 1,000 stored questions: the default config, and the same
    with the verifier off (the cosine threshold and guards alone)."""

    def __init__(self) -> None:
        self.embedder = _minilm_or_skip()
        self.loop = asyncio.new_event_loop()
        self.caller = Caller(key_name="bench")
        self.request = lambda text: ChatRequest(
            model="m", messages=[{"role": "user", "content": text}], temperature=0
        )
        base = "ledger: {backend: memory}\ncache: {semantic: {embedder: minilm%s}}\n"
        self.cache = self.loop.run_until_complete(open_cache(parse_config(base % "").config))
        self.exact_only = self.loop.run_until_complete(
            open_cache(parse_config(base % ", enabled: false").config)
        )
        stored = [f"How do I {t}?" for t in TOPICS[:1000]]
        for text in stored:
            self.loop.run_until_complete(
                self.cache.store(self.request(text), self.caller, ChatAnswer(content="x"))
            )
        self.rewordings = itertools.cycle([f"What is the way to {t}?" for t in TOPICS[:1000]])
        self.fresh = (f"Why does my {i}th attempt to bake bread fail?" for i in itertools.count())

    def lookup(self, cache: Any, text: str) -> Any:
        return self.loop.run_until_complete(cache.lookup(self.request(text), self.caller))

    def timed(self, fn: Any, texts: Iterator[str], n: int) -> np.ndarray:
        out = []
        for _ in range(n):
            text = next(texts)
            t = time.perf_counter()
            fn(text)
            out.append(time.perf_counter() - t)
        return np.array(out) * 1e6


@pytest.fixture(scope="module")
def semantic_bench() -> SemanticBench:
    return SemanticBench()


def _added(extra: dict[str, Any], name: str, path_us: np.ndarray, base_us: np.ndarray) -> None:
    for q in (50, 99):
        extra[f"{name}_p{q}_us"] = float(np.percentile(path_us, q))
        extra[f"added_p{q}_us"] = float(np.percentile(path_us, q) - np.percentile(base_us, q))


def test_cache_semantic_miss(benchmark: Any, semantic_bench: SemanticBench) -> None:
    b = semantic_bench
    miss = b.timed(lambda t: b.lookup(b.cache, t), b.fresh, 100)
    exact = b.timed(lambda t: b.lookup(b.exact_only, t), b.fresh, 100)
    _added(benchmark.extra_info, "semantic_miss", miss, exact)
    assert benchmark.pedantic(lambda: b.lookup(b.cache, next(b.fresh)), rounds=100) is None


def test_cache_semantic_hit(benchmark: Any, semantic_bench: SemanticBench) -> None:
    b = semantic_bench
    hit = b.timed(lambda t: b.lookup(b.cache, t), b.rewordings, 100)
    exact = b.timed(lambda t: b.lookup(b.exact_only, t), b.rewordings, 100)
    _added(benchmark.extra_info, "semantic_hit", hit, exact)
    found = benchmark.pedantic(lambda: b.lookup(b.cache, next(b.rewordings)), rounds=100)
    benchmark.extra_info["last_kind"] = found.kind if found is not None else "miss"


def test_cache_embed_one_minilm(benchmark: Any, semantic_bench: SemanticBench) -> None:
    """The embedding a semantic lookup cannot avoid: the reference the lookups are held to."""
    b = semantic_bench
    benchmark.pedantic(lambda: b.embedder.embed([next(b.fresh)]), rounds=100)


def test_cache_decision_verified(benchmark: Any, semantic_bench: SemanticBench) -> None:
    """The decision alone (search, guards, verifier) for a rewording, vector given."""
    index = semantic_bench.cache.semantic
    assert index is not None
    assert index.verifier is not None
    text = "What is the way to sort a list in Python?"
    vector = semantic_bench.embedder.embed([text])[0]
    scope = index.index.scopes()[0][0]
    benchmark(index.search, scope, text, vector)


def test_cache_decision_unverified(benchmark: Any, semantic_bench: SemanticBench) -> None:
    """The same decision with the verifier off (`max_error_rate: null`): its reference."""
    index = semantic_bench.cache.semantic
    assert index is not None
    text = "What is the way to sort a list in Python?"
    vector = semantic_bench.embedder.embed([text])[0]
    scope = index.index.scopes()[0][0]
    verifier, index.verifier = index.verifier, None
    try:
        benchmark(index.search, scope, text, vector)
    finally:
        index.verifier = verifier
