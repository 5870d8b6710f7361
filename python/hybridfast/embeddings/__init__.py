"""Embeddings: `POST /v1/embeddings`, the local models and dynamic batching.

This module stays import-light (no NumPy): the server imports it at start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hybridfast.config import Config

# The built-in local models of the `local` provider (see `local.py`).
BUILTIN_MODELS = ("minilm", "hashing")


def builtin_models(config: Config) -> list[str]:
    """The built-in model names `config` does not shadow with a model or route of its own:
    what `/v1/models` should list beside the configured ones."""
    taken = config.model_names() | set(config.routes)
    return [name for name in BUILTIN_MODELS if name not in taken]
