"""Embedding computation: the built-in local models (through the dynamic batcher) and the
providers' `embed`, each answer as a float32 matrix with per-input token counts.

The request flow around it — routing, budget holds, the per-text cache, fallback, the ledger
line — is the pipeline's (`hybridfast.pipeline.embeddings`), shared with chat.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from hybridfast import metrics
from hybridfast._core import Price
from hybridfast.config import LOCAL_PROVIDER, Config, EmbeddingsConfig
from hybridfast.embeddings.batcher import DynamicBatcher
from hybridfast.embeddings.local import LOCAL_MODELS, Embedder, MiniLMEmbedder, load_embedder
from hybridfast.errors import InvalidRequest, ProviderUnavailable
from hybridfast.pricing import estimate_tokens
from hybridfast.types import (
    BATCH,
    INTERACTIVE,
    Deployment,
    EmbeddingRequest,
    EmbeddingResult,
    Usage,
)

__all__ = [
    "EmbeddingEngine",
    "EmbeddingRequest",
    "EmbeddingResult",
    "builtin_deployment",
    "parse_request",
    "provider_answer",
]

log = logging.getLogger("hybridfast.embeddings")

Matrix = npt.NDArray[np.float32]
Inputs = list[str] | list[list[int]]

TEXTS = metrics.Counter(
    "hybridfast_embed_texts",
    "Texts embedded, by deployment and whether the exact cache answered",
    ["deployment", "cache"],
)

# The most dimensions the hashing embedder may be asked for.
MAX_HASHING_DIMENSIONS = 8192


# The encodings token-id input may come in: OpenAI's, or the local model's own ("native").
TOKEN_ENCODINGS = ("cl100k_base", "o200k_base", "native")


def decode_openai_tokens(ids: list[list[int]], encoding: str) -> list[str]:
    """Token ids of an OpenAI encoding back to text (tiktoken-compatible, offline)."""
    try:
        import bpe_openai  # type: ignore[import-untyped]
    except ImportError:
        raise InvalidRequest(
            "token-id input for a local model needs the OpenAI tokenizer to read it",
            hint="send text, or pip install 'hybridfast[tokens]'",
        ) from None
    enc = bpe_openai.get_encoding(encoding)
    try:
        return [enc.decode(item) for item in ids]
    except (KeyError, ValueError) as exc:
        raise InvalidRequest(
            f"`input` holds a token id that {encoding} does not have ({exc})",
            hint="send text, or the ids of the model's own vocabulary with "
            'token_encoding: "native"',
        ) from None


def _token_encoding(body: dict[str, Any]) -> str:
    token_encoding = body.get("token_encoding", "cl100k_base")
    if token_encoding not in TOKEN_ENCODINGS:
        raise InvalidRequest(f"`token_encoding` must be one of {', '.join(TOKEN_ENCODINGS)}")
    return str(token_encoding)


def parse_request(
    body: Any, limits: EmbeddingsConfig, *, priority_header: str | None = None
) -> EmbeddingRequest:
    """Checks an OpenAI-shaped body; raises `InvalidRequest` naming the bad field."""
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("`model` must be a non-empty string")
    if "input" not in body:
        raise InvalidRequest("`input` is required")
    raw = body["input"]
    tokens = False
    inputs: Inputs
    if isinstance(raw, str):
        inputs = [raw]
    elif isinstance(raw, list):
        if not raw:
            raise InvalidRequest("`input` must not be an empty list")
        if all(isinstance(x, str) for x in raw):
            inputs = list(raw)
        elif all(_is_token(x) for x in raw):
            inputs, tokens = [list(raw)], True
        elif all(isinstance(x, list) and all(_is_token(t) for t in x) for x in raw):
            if any(not x for x in raw):
                raise InvalidRequest("`input` token arrays must not be empty")
            inputs, tokens = [list(x) for x in raw], True
        else:
            raise InvalidRequest(
                "`input` must be a string, a list of strings, a list of token ids "
                "or a list of token id lists"
            )
    else:
        raise InvalidRequest("`input` must be a string or a list")
    if len(inputs) > limits.max_inputs:
        raise InvalidRequest(
            f"`input` has {len(inputs)} items; at most {limits.max_inputs} are allowed",
            hint="split the request, or raise embeddings.max_inputs",
        )
    for i, item in enumerate(inputs):
        if len(item) > limits.max_input_chars:
            what = "tokens" if tokens else "characters"
            raise InvalidRequest(
                f"`input[{i}]` has {len(item)} {what}; at most {limits.max_input_chars} "
                "are allowed",
                hint="shorten the text, or raise embeddings.max_input_chars",
            )
    dimensions = body.get("dimensions")
    if dimensions is not None and (
        not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1
    ):
        raise InvalidRequest("`dimensions` must be a positive integer")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64", None):
        raise InvalidRequest("`encoding_format` must be float or base64")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise InvalidRequest("`user` must be a string")
    wanted = priority_header or body.get("priority") or "interactive"
    if wanted not in ("interactive", "batch"):
        raise InvalidRequest("`priority` must be interactive or batch")
    cache = body.get("cache", "default")
    if cache not in ("default", "no-cache", "no-store"):
        raise InvalidRequest("`cache` must be default, no-cache or no-store")
    return EmbeddingRequest(
        model=model,
        inputs=inputs,
        tokens=tokens,
        token_encoding=_token_encoding(body),
        dimensions=dimensions,
        priority=BATCH if wanted == "batch" else INTERACTIVE,
        cache=cache,
        user=user,
    )


def _is_token(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def builtin_deployment(name: str) -> Deployment:
    """The deployment for a built-in local model that the config does not list."""
    return Deployment(
        id=f"{name}#local",
        name=name,
        provider=LOCAL_PROVIDER,
        kind=LOCAL_PROVIDER,
        model=name,
        local=True,
        quality=0.5,
        price=Price(),
        capabilities=frozenset({"embeddings"}),
        dimensions=384,
    )


class EmbeddingEngine:
    """Computes embeddings on one deployment: a built-in local model (batched) or a provider.
    It owns the local models' batchers; the gateway closes it."""

    def __init__(self, config: Config) -> None:
        self.settings = config.embeddings
        self._batchers: dict[tuple[str, int | None], DynamicBatcher] = {}
        # Names the config serves itself: a built-in model's name there is the config's.
        self.configured = config.model_names() | set(config.routes)

    def builtin(self, name: str) -> Deployment | None:
        """The deployment of a built-in local model the config does not name, if `name` is one."""
        if name in LOCAL_MODELS and name not in self.configured:
            return builtin_deployment(name)
        return None

    async def compute(
        self,
        deployment: Deployment,
        request: EmbeddingRequest,
        inputs: Inputs,
        provider: Any,
        gone: Callable[[], bool] | None = None,
    ) -> tuple[Matrix, list[int], Usage]:
        """Vectors, per-input token counts and usage of `inputs` on `deployment`."""
        if deployment.kind == LOCAL_PROVIDER:
            return await self._compute_local(deployment, request, inputs, gone)
        return await self._compute_remote(deployment, request, inputs, provider)

    @staticmethod
    def worst_case(deployment: Deployment, inputs: Sequence[Any], tokens: bool) -> int:
        """What the budget holds for embedding `inputs` (generous: an estimate below the real
        count would let a request overspend)."""
        if not inputs:
            return 0
        if tokens:
            count = sum(len(x) for x in inputs)
        else:
            count = sum(estimate_tokens(deployment.kind, deployment.model, x) for x in inputs)
            count = count * 2 + len(inputs)
        return deployment.price.cost(input_tokens=count)

    async def _compute_remote(
        self, deployment: Deployment, request: EmbeddingRequest, inputs: Inputs, provider: Any
    ) -> tuple[Matrix, list[int], Usage]:
        if provider is None or not hasattr(provider, "embed"):
            raise ProviderUnavailable(f"provider {deployment.provider!r} cannot embed")
        if (
            request.dimensions is not None
            and deployment.dimensions is not None
            and request.dimensions > deployment.dimensions
        ):
            raise InvalidRequest(
                f"{deployment.name} has {deployment.dimensions} dimensions; "
                f"`dimensions` cannot be {request.dimensions}"
            )
        answer = await provider.embed(deployment, inputs, dimensions=request.dimensions)
        vectors, usage = provider_answer(answer)
        if vectors.shape[0] != len(inputs):
            raise ProviderUnavailable(
                f"{deployment.id} answered {vectors.shape[0]} vectors for {len(inputs)} inputs"
            )
        if usage is None or (usage.estimated and usage.input_tokens == 0):
            count = (
                sum(len(x) for x in inputs)
                if request.tokens
                else sum(estimate_tokens(deployment.kind, deployment.model, str(x)) for x in inputs)
            )
            usage = Usage(input_tokens=count, estimated=True)
        # Per-input counts are not reported by providers: spread the total for the cache.
        share, extra = divmod(usage.input_tokens, max(1, len(inputs)))
        counts = [share + (1 if i < extra else 0) for i in range(len(inputs))]
        return vectors, counts, usage

    async def _compute_local(
        self,
        deployment: Deployment,
        request: EmbeddingRequest,
        inputs: Inputs,
        gone: Callable[[], bool] | None = None,
    ) -> tuple[Matrix, list[int], Usage]:
        name = deployment.model
        embedder = self._local(name, request.dimensions)
        texts: list[str]
        if not request.tokens:
            texts = inputs  # type: ignore[assignment]
        else:
            if not isinstance(embedder, MiniLMEmbedder):
                raise InvalidRequest(f"the local model {name!r} takes text input only")
            ids: list[list[int]] = inputs  # type: ignore[assignment]
            if request.token_encoding == "native":
                vectors, counts = await asyncio.to_thread(embedder.embed_ids, ids)
                return vectors, [int(c) for c in counts], Usage(input_tokens=int(sum(counts)))
            # OpenAI-encoded ids are not this model's: back to text, which it tokenizes itself.
            texts = decode_openai_tokens(ids, request.token_encoding)
        if self.settings.batching:
            batcher = self._batcher(name, request.dimensions, embedder)
            vectors, counts = await batcher.submit(texts, request.priority, gone)
        else:
            vectors, counts = await asyncio.to_thread(embedder.embed_counted, texts)
        counts = [int(c) for c in counts]
        return vectors, counts, Usage(input_tokens=sum(counts))

    def _local(self, name: str, dimensions: int | None) -> Embedder:
        if name == "minilm" and dimensions not in (None, 384):
            raise InvalidRequest("minilm produces 384 dimensions; `dimensions` must be 384")
        if name == "hashing" and dimensions is not None and dimensions > MAX_HASHING_DIMENSIONS:
            raise InvalidRequest(f"hashing supports at most {MAX_HASHING_DIMENSIONS} dimensions")
        return load_embedder(
            name,
            dimensions=dimensions if name == "hashing" else None,
            threads=self.settings.threads,
            device=self.settings.device,
        )

    def _batcher(self, name: str, dimensions: int | None, embedder: Embedder) -> DynamicBatcher:
        key = (name, dimensions)
        batcher = self._batchers.get(key)
        if batcher is None:
            s = self.settings
            batcher = DynamicBatcher(
                embedder.embed_counted,
                name=name,
                max_batch=s.max_batch,
                max_wait_ms=s.max_wait_ms,
                max_queue=s.max_queue,
            )
            self._batchers[key] = batcher
        return batcher

    async def close(self) -> None:
        for batcher in self._batchers.values():
            await batcher.close()
        self._batchers.clear()


def provider_answer(answer: Any) -> tuple[Matrix, Usage | None]:
    """A provider adapter's `embed` result, `(vectors, usage)`, as a float32 matrix."""
    try:
        vectors, usage = answer
        matrix = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError):
        raise ProviderUnavailable(
            "the provider answered embeddings of an unexpected shape"
        ) from None
    if matrix.ndim != 2:
        raise ProviderUnavailable("the provider answered embeddings of an unexpected shape")
    return matrix, usage if isinstance(usage, Usage) else None
