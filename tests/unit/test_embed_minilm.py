"""The local MiniLM against sentence-transformers' own output (the committed reference made by
tests/data/make_minilm_reference.py): token ids exactly, vectors at cosine ≥ 0.999."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hybridfast._core import LocalEmbedder, StorageError
from hybridfast.embeddings import local
from hybridfast.embeddings.gpu import GpuBert, read_safetensors
from hybridfast.embeddings.local import load_embedder, minilm_dir, select_device
from hybridfast.errors import InvalidRequest, ModelNotFound

DATA = Path(__file__).resolve().parents[1] / "data"
REF = json.loads((DATA / "minilm_reference.json").read_text(encoding="utf-8"))
REF_VECTORS = np.load(DATA / "minilm_reference.npy")
TEXTS: list[str] = REF["texts"]


@pytest.fixture(scope="module")
def minilm() -> local.MiniLMEmbedder:
    embedder = load_embedder("minilm", device="cpu")
    assert isinstance(embedder, local.MiniLMEmbedder)
    return embedder


def test_reference_covers_the_hard_cases() -> None:
    assert len(TEXTS) >= 50
    assert "" in TEXTS
    assert any(len(ids) == 256 for ids in REF["input_ids"])
    assert any(any(ord(c) > 0x3000 for c in t) for t in TEXTS)  # CJK
    assert REF_VECTORS.shape == (len(TEXTS), 384)


def test_token_ids_match_hugging_face_tokenizers(minilm: local.MiniLMEmbedder) -> None:
    ours = minilm.tokenize(TEXTS)
    for text, got, want in zip(TEXTS, ours, REF["input_ids"], strict=True):
        assert got == want, text


def test_vectors_match_sentence_transformers(minilm: local.MiniLMEmbedder) -> None:
    vectors, tokens = minilm.embed_counted(TEXTS)
    assert vectors.dtype == np.float32
    assert vectors.shape == REF_VECTORS.shape
    cosine = (vectors * REF_VECTORS).sum(axis=1) / np.linalg.norm(REF_VECTORS, axis=1)
    assert cosine.min() >= 0.999, TEXTS[int(cosine.argmin())]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert tokens == [len(ids) for ids in REF["input_ids"]]


def test_vectors_do_not_depend_on_batch_or_threads(minilm: local.MiniLMEmbedder) -> None:
    one_thread = LocalEmbedder(str(minilm_dir()), 256, 1)
    alone = np.stack([one_thread.embed([t])[0] for t in TEXTS[:12]])
    together = minilm.embed(TEXTS[:12])
    np.testing.assert_allclose(alone, together, atol=1e-5)


def test_token_id_input(minilm: local.MiniLMEmbedder) -> None:
    ids = REF["input_ids"][0][1:-1]  # without [CLS]/[SEP]: those are added
    vectors, tokens = minilm.embed_ids([ids])
    assert tokens == [len(ids) + 2]
    assert float(vectors[0] @ REF_VECTORS[0]) >= 0.999
    with pytest.raises(InvalidRequest):
        minilm.embed_ids([[minilm.vocab_size]])
    with pytest.raises(InvalidRequest):
        minilm.embed_ids([[-1]])


def test_array_code_path_matches_reference(minilm: local.MiniLMEmbedder) -> None:
    """The GPU path's forward pass, run with NumPy as its array module (no GPU here)."""
    model = GpuBert.load(minilm_dir(), xp=np)
    # Short texts only: NumPy on a shared CPU is slow, and truncation is the tokenizer's job
    # (checked above), not the forward pass's.
    picked = [i for i, ids in enumerate(REF["input_ids"]) if len(ids) <= 24][:12]
    vectors = model.embed_ids(minilm.tokenize([TEXTS[i] for i in picked]))
    want = REF_VECTORS[picked]
    cosine = (vectors * want).sum(axis=1) / np.linalg.norm(want, axis=1)
    assert cosine.min() >= 0.999


def test_safetensors_reader_matches_native_dims() -> None:
    tensors = read_safetensors(minilm_dir() / "model.safetensors")
    assert tensors["embeddings.word_embeddings.weight"].shape == (30522, 384)
    assert tensors["encoder.layer.5.output.dense.weight"].dtype == np.float32


def test_load_embedder_shares_instances_and_checks_names() -> None:
    assert load_embedder("minilm", device="cpu") is load_embedder("minilm", device="cpu")
    with pytest.raises(ModelNotFound):
        load_embedder("bert-large")
    with pytest.raises(InvalidRequest):
        load_embedder("minilm", dimensions=128)


def test_missing_model_files_are_model_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HYBRIDFAST_MINILM_DIR", str(tmp_path))
    with pytest.raises(ModelNotFound):
        load_embedder("minilm", threads=3, device="cpu")  # a key not loaded before
    with pytest.raises(StorageError):
        LocalEmbedder(str(tmp_path))


def test_hashing_embedder() -> None:
    embedder = load_embedder("hashing", dimensions=64)
    vectors = embedder.embed(["a cat sat", "a cat sat", "quantum chromodynamics"])
    assert vectors.shape == (3, 64)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(vectors[0], vectors[1])
    assert not np.allclose(vectors[0], vectors[2])


def test_device_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HYBRIDFAST_EMBED_DEVICE", raising=False)
    monkeypatch.setattr(local, "cuda_available", lambda: False)
    assert select_device("auto") == "cpu"
    assert select_device("cpu") == "cpu"
    with pytest.raises(ModelNotFound):
        select_device("cuda")
    with pytest.raises(ModelNotFound):
        select_device("tpu")
    monkeypatch.setattr(local, "cuda_available", lambda: True)
    assert select_device("auto") == "cuda"
    assert select_device("cuda") == "cuda"
    monkeypatch.setenv("HYBRIDFAST_EMBED_DEVICE", "cpu")
    assert select_device("auto") == "cpu"


def test_gpu_path_is_used_for_large_batches_only(
    minilm: local.MiniLMEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a GPU model attached, big batches go to it and small ones stay native."""
    calls: list[int] = []

    class Spy:
        def embed_ids(self, ids: list[list[int]]) -> np.ndarray:
            calls.append(len(ids))
            return np.zeros((len(ids), 384), dtype=np.float32)

    monkeypatch.setattr(minilm, "_gpu", Spy())
    small, _ = minilm.embed_counted(["a"] * (local.GPU_MIN_BATCH - 1))
    big, tokens = minilm.embed_counted(["a b"] * local.GPU_MIN_BATCH)
    assert calls == [local.GPU_MIN_BATCH]
    assert np.abs(small).sum() > 0
    assert np.abs(big).sum() == 0
    assert tokens == [4] * local.GPU_MIN_BATCH


def test_cuda_without_cupy_reports_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy → ImportError
    assert local.cuda_available() is False


def test_gpu_failures_fall_back_to_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """`auto` keeps serving on the CPU when the GPU cannot load the model or fails a batch;
    `cuda` asked for explicitly fails loudly instead."""
    from hybridfast.embeddings import gpu

    monkeypatch.delenv("HYBRIDFAST_EMBED_DEVICE", raising=False)
    monkeypatch.setattr(local, "cuda_available", lambda: True)

    def broken_load(model_dir: Path, xp: object = None) -> GpuBert:
        raise RuntimeError("cudaErrorMemoryAllocation")

    monkeypatch.setattr(gpu.GpuBert, "load", staticmethod(broken_load))
    auto = local.MiniLMEmbedder(minilm_dir(), device="auto")
    assert auto.device == "cpu"
    with pytest.raises(ModelNotFound):
        local.MiniLMEmbedder(minilm_dir(), device="cuda")

    class Failing:
        def embed_ids(self, ids: list[list[int]]) -> np.ndarray:
            raise RuntimeError("out of memory")

    monkeypatch.setattr(auto, "_gpu", Failing())
    texts = TEXTS[:10]
    vectors, _ = auto.embed_counted(texts)
    np.testing.assert_allclose(
        vectors, load_embedder("minilm", device="cpu").embed(texts), atol=1e-5
    )
