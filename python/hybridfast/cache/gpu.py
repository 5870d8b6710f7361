"""Batched similarity search on a GPU (CuPy): one matrix product and a top-k per batch.

The CPU index answers single lookups in well under a millisecond; a GPU only pays off for
many queries at once against a large scope (re-scoring a batch of requests, warming a
cache, bulk evaluation). `GpuSearcher.create()` returns None unless CuPy imports and a CUDA
device answers, so callers fall back to the CPU path without a branch of their own.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt

log = logging.getLogger("hybridfast.cache")


def gpu_available() -> bool:
    """CuPy is installed and at least one CUDA device is visible."""
    try:
        import cupy
    except Exception:  # ImportError, or a CUDA runtime that fails to load
        return False
    try:
        return int(cupy.cuda.runtime.getDeviceCount()) > 0
    except Exception:
        return False


class GpuSearcher:
    """A device-resident copy of one scope's vectors (float32 or float16)."""

    def __init__(
        self,
        cupy: Any,
        ids: npt.NDArray[np.int64],
        vectors: npt.NDArray[np.float32],
        half: bool = False,
    ) -> None:
        self._cp = cupy
        self.ids = ids
        dtype = cupy.float16 if half else cupy.float32
        self._matrix = cupy.asarray(vectors, dtype=dtype)

    @classmethod
    def create(
        cls, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32], half: bool = False
    ) -> GpuSearcher | None:
        if not gpu_available():
            return None
        import cupy

        return cls(cupy, ids, vectors, half)

    def __len__(self) -> int:
        return len(self.ids)

    def search(
        self, queries: npt.NDArray[np.float32], k: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """(ids (n, k), scores (n, k)) best first, padded with -1 / -inf like the CPU index."""
        cp = self._cp
        n = len(self.ids)
        q = cp.asarray(queries, dtype=self._matrix.dtype)
        scores = (q @ self._matrix.T).astype(cp.float32)
        kk = min(k, n)
        if kk == 0:
            return (
                np.full((len(queries), k), -1, dtype=np.int64),
                np.full((len(queries), k), -np.inf, dtype=np.float32),
            )
        part = cp.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        top = cp.take_along_axis(scores, part, axis=1)
        order = cp.argsort(-top, axis=1)
        pos = cp.take_along_axis(part, order, axis=1).get()
        top = cp.take_along_axis(top, order, axis=1).get()
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        out = np.full((len(queries), k), -np.inf, dtype=np.float32)
        ids[:, :kk] = self.ids[pos]
        out[:, :kk] = top
        return ids, out


def numpy_search(
    ids: npt.NDArray[np.int64],
    vectors: npt.NDArray[np.float32],
    queries: npt.NDArray[np.float32],
    k: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """The same computation with numpy: the CPU reference the GPU path is tested against."""
    scores = queries @ vectors.T
    kk = min(k, len(ids))
    out_ids = np.full((len(queries), k), -1, dtype=np.int64)
    out = np.full((len(queries), k), -np.inf, dtype=np.float32)
    if kk:
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        top = np.take_along_axis(scores, part, axis=1)
        order = np.argsort(-top, axis=1)
        out_ids[:, :kk] = ids[np.take_along_axis(part, order, axis=1)]
        out[:, :kk] = np.take_along_axis(top, order, axis=1)
    return out_ids, out
