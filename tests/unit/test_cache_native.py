"""The cache's native parts through the binding: embedder, vector index, exact table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridfast._core import (
    DimensionError,
    ExactTable,
    HashingEmbedder,
    InvalidArgumentError,
    StorageError,
    VectorIndex,
)


def unit_rows(n: int, dim: int, seed: int = 0, clusters: int = 20) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, dim)).astype(
        np.float32
    )
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


# --- hashing embedder -------------------------------------------------------------------


def test_embedder_shape_dtype_and_unit_rows() -> None:
    e = HashingEmbedder()
    assert e.dimensions == 384
    out = e.embed(["How do I reverse a list?", "another text", ""])
    assert out.shape == (3, 384)
    assert out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out[:2], axis=1), 1.0, rtol=1e-5)
    assert not out[2].any()  # nothing to embed: the zero vector, which matches nothing
    assert HashingEmbedder(64).embed(["x"]).shape == (1, 64)
    assert e.embed([]).shape == (0, 384)


def test_embedder_is_deterministic_and_case_insensitive() -> None:
    a = HashingEmbedder().embed(["Reverse a LIST in Python"])
    b = HashingEmbedder().embed(["reverse a list in python"])
    np.testing.assert_array_equal(a, b)


def test_embedder_ranks_similar_text_above_unrelated() -> None:
    v = HashingEmbedder().embed(
        [
            "How do I reverse a list in Python?",
            "how can I reverse a python list",
            "What is the capital of France?",
        ]
    )
    assert v[0] @ v[1] > 0.6 > 0.3 > v[0] @ v[2]


def test_embedder_rejects_bad_dimensions() -> None:
    with pytest.raises(InvalidArgumentError):
        HashingEmbedder(0)


# --- vector index -----------------------------------------------------------------------


def test_index_returns_exact_neighbours_for_small_scopes() -> None:
    data = unit_rows(500, 32)
    index = VectorIndex(32)
    index.add(7, np.arange(500, dtype=np.int64), data)
    assert len(index) == 500
    assert 3 in index
    ids, scores = index.search(7, data[:5], k=3)
    assert ids.shape == (5, 3)
    assert ids.dtype == np.int64
    assert scores.dtype == np.float32
    np.testing.assert_array_equal(ids[:, 0], np.arange(5))
    np.testing.assert_allclose(scores[:, 0], 1.0, rtol=1e-5)
    brute = data @ data[:5].T
    np.testing.assert_array_equal(ids, np.argsort(-brute.T, axis=1)[:, :3])


def test_index_scopes_are_isolated() -> None:
    data = unit_rows(100, 16)
    index = VectorIndex(16)
    index.add(1, np.arange(50, dtype=np.int64), data[:50])
    index.add(2, np.arange(50, 100, dtype=np.int64), data[50:])
    ids, _ = index.search(1, data[60:61], k=50)
    assert set(ids[0].tolist()) <= set(range(50))
    assert index.search_one(3, data[0], k=5) == []
    assert index.scopes() == [(1, 50, False), (2, 50, False)]


def test_index_pads_when_scope_is_smaller_than_k() -> None:
    index = VectorIndex(8)
    index.add(0, np.array([10], dtype=np.int64), unit_rows(1, 8))
    ids, scores = index.search(0, unit_rows(2, 8, seed=1), k=3)
    assert ids[:, 1:].tolist() == [[-1, -1], [-1, -1]]
    assert np.isneginf(scores[:, 1:]).all()


def test_index_remove_replace_and_clear() -> None:
    data = unit_rows(10, 8)
    index = VectorIndex(8)
    index.add(0, np.arange(10, dtype=np.int64), data)
    assert index.remove(3)
    assert not index.remove(3)
    assert 3 not in [i for i, _ in index.search_one(0, data[3], k=10)]
    index.add(5, np.array([4], dtype=np.int64), data[4:5])  # re-adding moves id 4
    assert 4 not in [i for i, _ in index.search_one(0, data[4], k=10)]
    assert index.search_one(5, data[4], k=1)[0][0] == 4
    assert sorted(index.remove_scope(0)) == [0, 1, 2, 5, 6, 7, 8, 9]
    assert index.clear() == 1
    assert len(index) == 0


def test_index_rejects_bad_input_and_changes_nothing() -> None:
    index = VectorIndex(8)
    with pytest.raises(DimensionError):
        index.add(0, np.array([1], dtype=np.int64), unit_rows(1, 9))
    with pytest.raises(InvalidArgumentError):
        index.add(0, np.array([1, 2], dtype=np.int64), unit_rows(1, 8))
    bad = unit_rows(2, 8)
    bad[1, 0] = np.nan
    with pytest.raises(InvalidArgumentError):
        index.add(0, np.array([1, 2], dtype=np.int64), bad)
    assert len(index) == 0
    with pytest.raises(DimensionError):
        index.search(0, unit_rows(1, 4), k=1)
    with pytest.raises(InvalidArgumentError):
        VectorIndex(8, storage="f8")
    with pytest.raises(TypeError):
        index.add(0, np.array([1], dtype=np.int64), unit_rows(1, 8).astype(np.float64))


def test_index_accepts_non_contiguous_views() -> None:
    data = unit_rows(20, 16)
    wide = np.zeros((20, 32), dtype=np.float32)
    wide[:, ::2] = data
    view = wide[:, ::2]
    assert not view.flags["C_CONTIGUOUS"]
    index = VectorIndex(16)
    index.add(0, np.arange(20, dtype=np.int64)[::1], view)
    assert index.search_one(0, view[3], k=1)[0][0] == 3


@pytest.mark.parametrize("storage", ["f32", "f16", "int8"])
def test_hnsw_recall_on_clustered_data(storage: str) -> None:
    data = unit_rows(3200, 64, seed=3, clusters=64)
    base, queries = data[:3000], data[3000:]
    index = VectorIndex(64, storage=storage, ann_threshold=1000)
    index.add(0, np.arange(3000, dtype=np.int64), base)
    assert index.scopes() == [(0, 3000, True)]
    approx, _ = index.search(0, queries, k=10)
    exact, _ = index.search(0, queries, k=10, exact=True)
    recall1 = float(np.mean(approx[:, 0] == exact[:, 0]))
    recall10 = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)])
    assert recall1 >= 0.97, recall1
    assert recall10 >= 0.9, recall10


def test_index_snapshot_roundtrip(tmp_path: Path) -> None:
    data = unit_rows(1500, 32, seed=5)
    index = VectorIndex(32, storage="f16", ann_threshold=1000)
    index.add(1, np.arange(1200, dtype=np.int64), data[:1200])
    index.add(2, np.arange(1200, 1500, dtype=np.int64), data[1200:])
    index.remove(7)
    path = tmp_path / "index.bin"
    index.save(str(path))
    loaded = VectorIndex.load(str(path))
    assert len(loaded) == 1499
    assert loaded.storage == "f16"
    assert loaded.scopes() == index.scopes()
    for scope in (1, 2):
        a = index.search(scope, data[:20], k=5)
        b = loaded.search(scope, data[:20], k=5)
        np.testing.assert_array_equal(a[0], b[0])
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(StorageError):
        VectorIndex.load(str(path))
    with pytest.raises(StorageError):
        VectorIndex.load(str(tmp_path / "missing.bin"))


def test_export_scope_returns_the_live_vectors() -> None:
    data = unit_rows(30, 8)
    index = VectorIndex(8)
    index.add(4, np.arange(30, dtype=np.int64), data)
    index.remove(0)
    ids, vectors = index.export_scope(4)
    assert ids.tolist() == list(range(1, 30))
    np.testing.assert_allclose(vectors, data[1:], rtol=1e-6)
    assert index.export_scope(99)[1].shape == (0, 8)


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(1, 120),
    k=st.integers(1, 12),
    deletes=st.lists(st.integers(0, 119), max_size=40),
    seed=st.integers(0, 10_000),
)
def test_exact_search_is_numpy_brute_force(n: int, k: int, deletes: list[int], seed: int) -> None:
    data = unit_rows(n, 12, seed=seed, clusters=4)
    index = VectorIndex(12, ann_threshold=40)
    index.add(0, np.arange(n, dtype=np.int64), data)
    for d in deletes:
        index.remove(d)
    live = np.array(sorted(set(range(n)) - set(deletes)), dtype=np.int64)
    q = unit_rows(1, 12, seed=seed + 1)
    found = index.search_one(0, q[0], k=k, exact=True)
    truth = np.sort(data[live] @ q[0])[::-1][:k]
    np.testing.assert_allclose([s for _, s in found], truth, atol=1e-5)
    # The graph (built past 40 entries) finds every live vector itself.
    for i in live[:10]:
        assert index.search_one(0, data[i], k=1, ef=64)[0][1] == pytest.approx(1.0, abs=1e-5)


# --- exact table ------------------------------------------------------------------------


def test_table_ttl_and_lru() -> None:
    t = ExactTable(2)
    assert t.put(b"a", b"1", 10, now=0.0) == []
    t.put(b"b", b"2", 10, now=0.0)
    assert t.get(b"a", now=1.0) == b"1"
    assert t.put(b"c", b"3", 10, now=1.0) == [b"b"]
    assert t.evictions == 1
    assert len(t) == 2
    assert t.get(b"c", now=11.0) is None
    assert t.expirations == 1
    assert t.peek(b"a", now=5.0) == (b"1", 10.0, 0)
    assert t.keys() == [b"a"]


def test_table_scopes_purge_and_snapshot(tmp_path: Path) -> None:
    t = ExactTable(10)
    t.put(b"x", b"1", 5, scope=1, now=0.0)
    t.put(b"y", b"2", 50, scope=2, now=0.0)
    t.put(b"z", b"3", 50, scope=2, now=0.0)
    path = tmp_path / "t.bin"
    t.save(str(path), now=1.0)
    assert sorted(t.remove_scope(2)) == [b"y", b"z"]
    assert t.purge_expired(now=6.0) == [b"x"]
    loaded = ExactTable.load(str(path), 10, now=6.0)
    assert loaded.keys() == [b"y", b"z"]
    assert loaded.get(b"x", now=6.0) is None
    path.write_bytes(b"garbage!")
    with pytest.raises(StorageError):
        ExactTable.load(str(path))
    with pytest.raises(InvalidArgumentError):
        ExactTable(0)


@settings(max_examples=60, deadline=None)
@given(
    capacity=st.integers(1, 6),
    ops=st.lists(
        st.tuples(
            st.sampled_from(["put", "get", "remove", "tick"]),
            st.integers(0, 9),
            st.floats(0.5, 5.0),
        ),
        max_size=60,
    ),
)
def test_table_matches_a_reference_lru(capacity: int, ops: list[tuple[str, int, float]]) -> None:
    """Against an OrderedDict model of the same TTL + LRU rules."""
    from collections import OrderedDict

    table = ExactTable(capacity)
    model: OrderedDict[bytes, tuple[bytes, float]] = OrderedDict()
    now = 0.0
    for op, k, x in ops:
        key = bytes([k])
        if op == "tick":
            now += x
        elif op == "put":
            value = f"{k}@{now}".encode()
            model.pop(key, None)
            evicted = []
            while len(model) >= capacity:
                evicted.append(model.popitem(last=False)[0])
            model[key] = (value, now + x)
            assert table.put(key, value, x, now=now) == evicted
        elif op == "get":
            found = model.get(key)
            if found is not None and found[1] <= now:
                del model[key]
                found = None
            if found is not None:
                model.move_to_end(key)
            assert table.get(key, now=now) == (found[0] if found else None)
        else:
            assert table.remove(key) == (model.pop(key, None) is not None)
        assert table.keys() == list(model)
