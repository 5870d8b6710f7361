"""The semantic half of the cache: the embedder, the index partition per scope, the payloads.

Entries live in the native `VectorIndex` (one partition per semantic scope) and their
payloads (stored text, answer, model, tenant) in a native `ExactTable` keyed by entry id,
which also enforces TTL and the LRU bound; when it drops an entry, the vector goes too.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
import numpy as np
import numpy.typing as npt

from hybridfast._core import ExactTable, HashingEmbedder, VectorIndex
from hybridfast.cache import guards as guard_mod
from hybridfast.cache import verifier as verifier_mod
from hybridfast.cache.gpu import GpuSearcher, gpu_available
from hybridfast.cache.metrics import EVICTIONS, GUARD_VETOES
from hybridfast.config import SemanticCacheConfig
from hybridfast.embeddings.local import load_embedder, minilm_dir
from hybridfast.types import ChatAnswer

log = logging.getLogger("hybridfast.cache")

# Cosine thresholds without the verifier (`max_error_rate: null`, or an embedder without a
# calibrated verifier), measured with every guard on, on tests/data/cache_paraphrases.jsonl
# (where the guards were developed): the most hits with no false hit there. With the
# verifier, the cosine floor it was calibrated with applies instead (cache/verifier.py).
DEFAULT_THRESHOLDS = {"minilm": 0.90, "hashing": 0.90}
FALLBACK_THRESHOLD = 0.90


class TextEmbedder(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def dimensions(self) -> int: ...

    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]: ...


@dataclass
class EmbedderChoice:
    embedder: TextEmbedder | None
    # Why semantic matching is off, for the start-up log line (None: it is on).
    off_reason: str | None = None


class LazyEmbedder:
    """The neural model, loaded on first use rather than at start: `serve` stays small
    and quick to become healthy, and the first load happens in a worker thread (the cache
    calls neural embedders off the event loop). The instance is the embeddings module's
    shared one, so the cache and `/v1/embeddings` hold one copy of the weights."""

    def __init__(self, name: str, dimensions: int) -> None:
        self._name = name
        self._dimensions = dimensions
        self._model: TextEmbedder | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._name

    @property
    def dimensions(self) -> int:
        return self._dimensions

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        model = self._model
        if model is None:
            with self._lock:
                if self._model is None:
                    loaded: TextEmbedder = load_embedder(self._name)
                    if loaded.dimensions != self._dimensions:
                        raise ValueError(
                            f"{self._name} gives {loaded.dimensions} dimensions, "
                            f"expected {self._dimensions}"
                        )
                    self._model = loaded
                model = self._model
        return model.embed(texts)


def choose_embedder(config: SemanticCacheConfig) -> EmbedderChoice:
    """`auto`: the neural local model when its files are installed (loaded on first use),
    else semantic matching stays off (the hashing embedder misses the 2% false-hit
    target). A name: that model, loaded now so a bad name fails at start."""
    if not config.enabled:
        return EmbedderChoice(None, "semantic cache disabled in config (cache.semantic.enabled)")
    name = config.embedder
    if name == "hashing":
        return EmbedderChoice(HashingEmbedder(384))
    if name == "auto":
        try:
            path = minilm_dir()
            if not path.exists():
                raise FileNotFoundError(str(path))
        except Exception as exc:
            return EmbedderChoice(
                None,
                "semantic cache off: no neural embedder installed "
                f"({type(exc).__name__}: {exc}); the hashing embedder cannot keep false hits "
                "under 2% (set cache.semantic.embedder: hashing to use it anyway)",
            )
        return EmbedderChoice(LazyEmbedder("minilm", MINILM_DIMENSIONS))
    embedder: TextEmbedder = load_embedder(name)
    return EmbedderChoice(embedder)


MINILM_DIMENSIONS = 384


class Payload(msgspec.Struct, array_like=True):
    text: str
    model: str
    tenant: str
    scope: int
    answer: ChatAnswer


_ENCODER = msgspec.msgpack.Encoder()
_PAYLOAD = msgspec.msgpack.Decoder(Payload)


def encode_payload(p: Payload) -> bytes:
    return _ENCODER.encode(p)


def decode_payload(b: bytes) -> Payload:
    return _PAYLOAD.decode(b)


class Candidate(msgspec.Struct):
    id: int
    similarity: float
    payload: Payload


class SemanticIndex:
    """Vectors + payloads + guards; every method is synchronous and quick (the index
    releases the GIL inside searches)."""

    def __init__(self, config: SemanticCacheConfig, embedder: TextEmbedder) -> None:
        self.config = config
        self.embedder = embedder
        self.verifier = verifier_mod.verifier_for(embedder.name, config.max_error_rate)
        default = DEFAULT_THRESHOLDS.get(embedder.name, FALLBACK_THRESHOLD)
        if self.verifier is not None:
            default = self.verifier.model.floor
        self.threshold = config.threshold if config.threshold is not None else default
        self.guards = tuple(config.guards)
        self.index = VectorIndex(
            embedder.dimensions,
            storage=config.storage,
            ef_search=config.ef_search,
            ann_threshold=config.ann_threshold,
        )
        self.payloads = ExactTable(config.max_entries)
        # Texts embedded at lookup, reused when the answer is stored right after.
        self._recent: OrderedDict[str, npt.NDArray[np.float32]] = OrderedDict()
        self.use_gpu = config.gpu == "auto" and gpu_available()
        self._gpu: dict[int, tuple[int, GpuSearcher]] = {}
        self._versions: dict[int, int] = {}

    # -- embedding ------------------------------------------------------------------------

    def recent(self, text: str) -> npt.NDArray[np.float32] | None:
        """The vector of a text embedded moments ago (a miss's lookup, then its store)."""
        return self._recent.get(text)

    def remember(self, text: str, vector: npt.NDArray[np.float32]) -> None:
        self._recent[text] = vector
        if len(self._recent) > 1024:
            self._recent.popitem(last=False)

    def embed_many(self, texts: list[str]) -> npt.NDArray[np.float32]:
        return self.embedder.embed(texts)

    # -- reads ----------------------------------------------------------------------------

    def search(
        self, scope: int, text: str, vector: npt.NDArray[np.float32], now: float | None = None
    ) -> Candidate | None:
        """The best candidate above the threshold that every guard accepts."""
        for entry_id, similarity in self.index.search_one(scope, vector, self.config.top_k):
            found = self._accept(entry_id, similarity, text, now)
            if found is not None or similarity < self.threshold:
                return found
        return None

    def _accept(
        self, entry_id: int, similarity: float, text: str, now: float | None
    ) -> Candidate | None:
        if similarity < self.threshold:
            return None
        raw = self.payloads.get(entry_id.to_bytes(8, "little"), now)
        if raw is None:  # expired or evicted since: drop the vector too
            self._drop_vector(entry_id)
            return None
        payload = decode_payload(raw)
        verdict = guard_mod.check(text, payload.text, self.guards)
        if not verdict.ok:
            GUARD_VETOES.labels(verdict.guard or "?").inc()
            return None
        if self.verifier is not None and not self.verifier.accepts(
            text, payload.text, float(similarity)
        ):
            GUARD_VETOES.labels("verifier").inc()
            return None
        return Candidate(id=entry_id, similarity=float(similarity), payload=payload)

    def search_many(
        self, scope: int, texts: list[str], now: float | None = None
    ) -> list[Candidate | None]:
        """Batched lookups in one scope: one embedding call and one index call (on the GPU
        when it is selected and the scope is large)."""
        if not texts:
            return []
        vectors = self.embed_many(texts)
        k = self.config.top_k
        ids, scores = self._search_matrix(scope, vectors, k)
        out: list[Candidate | None] = []
        for text, row_ids, row_scores in zip(texts, ids, scores, strict=True):
            found = None
            for entry_id, similarity in zip(row_ids, row_scores, strict=True):
                if entry_id < 0 or similarity < self.threshold:
                    break
                found = self._accept(int(entry_id), float(similarity), text, now)
                if found is not None:
                    break
            out.append(found)
        return out

    def _search_matrix(
        self, scope: int, vectors: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        searcher = self.gpu_searcher(scope)
        if searcher is not None:
            return searcher.search(vectors, k)
        return self.index.search(scope, vectors, k)

    def gpu_searcher(self, scope: int) -> GpuSearcher | None:
        """A device copy of `scope` when the GPU path is selected and the scope is large
        enough to pay for it; rebuilt after the scope changes."""
        if not self.use_gpu:
            return None
        size = next((n for s, n, _ in self.index.scopes() if s == scope), 0)
        if size < self.config.gpu_min_entries:
            return None
        version = self._versions.get(scope, 0)
        cached = self._gpu.get(scope)
        if cached is not None and cached[0] == version:
            return cached[1]
        ids, vectors = self.index.export_scope(scope)
        searcher = GpuSearcher.create(ids, vectors, half=self.config.storage != "f32")
        if searcher is None:
            self.use_gpu = False
            return None
        self._gpu[scope] = (version, searcher)
        return searcher

    # -- writes ---------------------------------------------------------------------------

    def add(
        self,
        entry_id: int,
        vector: npt.NDArray[np.float32],
        payload: Payload,
        coarse: int,
        expires_at: float,
        now: float | None = None,
    ) -> None:
        evicted = self.payloads.put_until(
            entry_id.to_bytes(8, "little"), encode_payload(payload), expires_at, coarse, now
        )
        for key in evicted:
            self._drop_vector(int.from_bytes(key, "little"))
        if evicted:
            EVICTIONS.labels("semantic").inc(len(evicted))
        self.index.add(payload.scope, np.array([entry_id], dtype=np.int64), vector.reshape(1, -1))
        self._touch(payload.scope)

    def _drop_vector(self, entry_id: int) -> None:
        self.index.remove(entry_id)

    def _touch(self, scope: int) -> None:
        self._versions[scope] = self._versions.get(scope, 0) + 1

    def remove(self, entry_id: int) -> bool:
        found = self.payloads.remove(entry_id.to_bytes(8, "little"))
        return self.index.remove(entry_id) or found

    def remove_coarse(self, coarse: int) -> int:
        keys = self.payloads.remove_scope(coarse)
        for key in keys:
            self.index.remove(int.from_bytes(key, "little"))
        return len(keys)

    def purge_expired(self, now: float | None = None) -> int:
        keys = self.payloads.purge_expired(now)
        for key in keys:
            self.index.remove(int.from_bytes(key, "little"))
        return len(keys)

    def clear(self) -> int:
        self.index.clear()
        self._gpu.clear()
        return self.payloads.clear()

    def __len__(self) -> int:
        return len(self.payloads)

    def stats(self) -> dict[str, Any]:
        scopes = self.index.scopes()
        return {
            "embedder": self.embedder.name,
            "dimensions": self.embedder.dimensions,
            "threshold": self.threshold,
            "guards": list(self.guards),
            "max_error_rate": self.verifier.max_error_rate if self.verifier else None,
            "verifier_threshold": self.verifier.threshold if self.verifier else None,
            "entries": len(self.payloads),
            "vectors": len(self.index),
            "scopes": len(scopes),
            "scopes_with_graph": sum(1 for _, _, g in scopes if g),
            "storage": self.index.storage,
            "gpu": self.use_gpu,
            "evictions": self.payloads.evictions,
            "expirations": self.payloads.expirations,
        }
