"""MiniLM's forward pass as array code, for the GPU (CuPy) path.

The native core tokenizes (`LocalEmbedder.tokenize`, GIL released); this module runs the
BERT encoder on padded, length-sorted batches with CuPy, where one large batch is what makes
a GPU fast. The code is written against the array API NumPy and CuPy share (`xp`), so the CPU
test suite runs the very same function with NumPy and checks it against the native path and
the sentence-transformers reference; only the device transfer is CuPy-specific.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float32]

# Sequences per device batch: large enough to fill an H100, small enough for any 8 GB card.
DEVICE_BATCH = 512


def read_safetensors(path: Path) -> dict[str, npt.NDArray[Any]]:
    """The tensors of a safetensors file as NumPy arrays (memory-mapped, no torch)."""
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + length)
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64}
    out: dict[str, npt.NDArray[Any]] = {}
    for name, meta in header.items():
        if name == "__metadata__" or meta["dtype"] not in dtypes:
            continue
        start, end = meta["data_offsets"]
        out[name.removeprefix("bert.")] = (
            data[start:end].view(dtypes[meta["dtype"]]).reshape(meta["shape"])
        )
    return out


def _erf(xp: ModuleType, x: Any) -> Any:
    # The same fit as the core's (abs. error < 1.2e-7): NumPy has no erf of its own.
    z = xp.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = (
        -z * z
        - 1.26551223
        + t
        * (
            1.00002368
            + t
            * (
                0.37409196
                + t
                * (
                    0.09678418
                    + t
                    * (
                        -0.18628806
                        + t
                        * (
                            0.27886807
                            + t
                            * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))
                        )
                    )
                )
            )
        )
    )
    r = 1.0 - t * xp.exp(poly)
    return xp.where(x >= 0, r, -r)


def _is_dense(name: str, tensor: npt.NDArray[Any]) -> bool:
    return name.startswith("encoder.") and name.endswith(".weight") and tensor.ndim == 2


class GpuBert:
    """The encoder's weights on a device, and a batched forward pass."""

    def __init__(
        self, weights: dict[str, npt.NDArray[Any]], config: dict[str, Any], xp: ModuleType
    ) -> None:
        self.xp = xp
        self.heads = int(config["num_attention_heads"])
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        # Fresh copies: tensors in the file need not be 4-byte aligned, and NumPy's BLAS path
        # (like a device upload) wants aligned memory.
        # Dense weights are stored transposed ([in, out]) so each layer is one plain 2-D GEMM.
        self.w = {
            k: xp.asarray(np.array(v.T if _is_dense(k, v) else v, dtype=np.float32))
            for k, v in weights.items()
        }

    @classmethod
    def load(cls, model_dir: Path, xp: ModuleType | None = None) -> GpuBert:
        if xp is None:
            import cupy

            xp = cupy
        config = json.loads((model_dir / "config.json").read_text())
        weights = read_safetensors(model_dir / "model.safetensors")
        weights.pop("embeddings.position_ids", None)
        return cls(weights, config, xp)

    def embed_ids(self, sequences: list[list[int]]) -> Matrix:
        """Sentence vectors for token id sequences (with `[CLS]`/`[SEP]`), in input order."""
        xp = self.xp
        hidden = self.w["embeddings.word_embeddings.weight"].shape[1]
        out = np.empty((len(sequences), hidden), dtype=np.float32)
        # Sorting by length keeps the padding in each batch small.
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        for start in range(0, len(order), DEVICE_BATCH):
            chunk = order[start : start + DEVICE_BATCH]
            width = max(len(sequences[i]) for i in chunk)
            ids = np.zeros((len(chunk), width), dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.float32)
            for row, i in enumerate(chunk):
                ids[row, : len(sequences[i])] = sequences[i]
                mask[row, : len(sequences[i])] = 1.0
            vectors = self._forward(xp.asarray(ids), xp.asarray(mask))
            out[chunk] = vectors.get() if hasattr(vectors, "get") else vectors
        return out

    def _ln(self, x: Any, name: str) -> Any:
        xp = self.xp
        mean = x.mean(axis=-1, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
        return (x - mean) / xp.sqrt(var + self.eps) * self.w[f"{name}.weight"] + self.w[
            f"{name}.bias"
        ]

    def _dense(self, x: Any, name: str) -> Any:
        w = self.w[f"{name}.weight"]  # [in, out]
        flat = x.reshape(-1, x.shape[-1]) @ w + self.w[f"{name}.bias"]
        return flat.reshape(*x.shape[:-1], w.shape[1])

    def _forward(self, ids: Any, mask: Any) -> Any:
        xp, w = self.xp, self.w
        batch, width = ids.shape
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:width][None, :, :]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = self._ln(x, "embeddings.LayerNorm")
        hidden = x.shape[-1]
        dh = hidden // self.heads
        bias = ((1.0 - mask) * -1e9)[:, None, None, :].astype(xp.float32)
        for i in range(self.layers):
            p = f"encoder.layer.{i}"

            def heads(t: Any) -> Any:
                # Contiguous per head: batched GEMMs on strided views are slow in NumPy.
                return xp.ascontiguousarray(
                    t.reshape(batch, width, self.heads, dh).transpose(0, 2, 1, 3)
                )

            q = heads(self._dense(x, f"{p}.attention.self.query"))
            k = heads(self._dense(x, f"{p}.attention.self.key"))
            v = heads(self._dense(x, f"{p}.attention.self.value"))
            scores = (q @ xp.ascontiguousarray(k.transpose(0, 1, 3, 2))) * np.float32(
                1.0 / np.sqrt(dh)
            ) + bias
            scores = xp.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            ctx = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, width, hidden)
            x = self._ln(
                self._dense(ctx, f"{p}.attention.output.dense") + x,
                f"{p}.attention.output.LayerNorm",
            )
            inner = self._dense(x, f"{p}.intermediate.dense")
            inner = 0.5 * inner * (1.0 + _erf(xp, inner * np.float32(1 / np.sqrt(2.0))))
            x = self._ln(self._dense(inner, f"{p}.output.dense") + x, f"{p}.output.LayerNorm")
        pooled = (x * mask[:, :, None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
        norms = xp.maximum(xp.sqrt((pooled * pooled).sum(axis=1, keepdims=True)), 1e-12)
        return (pooled / norms).astype(xp.float32)
