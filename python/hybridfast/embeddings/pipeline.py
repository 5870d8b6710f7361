"""The embeddings pipeline, read top to bottom:

validate → plan deployments (router; `minilm`/`hashing` are built in) → for each deployment in
order: per-text exact cache lookup → reserve budget → compute only the texts not cached (local
model through the dynamic batcher, or the provider's `embed`) → settle cost → cache store;
a failing deployment falls back to the next one.

The server (`http.py`), the CLI (`embed`) and in-process callers all come through
`EmbeddingsService.embed`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from prometheus_client import Counter

from hybridfast._core import Price
from hybridfast.config import LOCAL_PROVIDER, Config, EmbeddingsConfig
from hybridfast.embeddings.batcher import BATCH, INTERACTIVE, DynamicBatcher
from hybridfast.embeddings.local import LOCAL_MODELS, Embedder, MiniLMEmbedder, load_embedder
from hybridfast.errors import (
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    ProviderUnavailable,
)
from hybridfast.metrics import REGISTRY
from hybridfast.types import (
    Caller,
    Deployment,
    Ledger,
    LedgerRecord,
    RequestFeatures,
    Reservation,
    Router,
    Usage,
)

log = logging.getLogger("hybridfast.embeddings")

Matrix = npt.NDArray[np.float32]
Inputs = list[str] | list[list[int]]
CacheMode = Literal["default", "no-cache", "no-store"]

TEXTS = Counter(
    "hybridfast_embed_texts_total",
    "Texts embedded, by deployment and whether the exact cache answered",
    ["deployment", "cache"],
    registry=REGISTRY,
)

# The most dimensions the hashing embedder may be asked for.
MAX_HASHING_DIMENSIONS = 8192


@dataclass(slots=True)
class EmbeddingRequest:
    """An embeddings request in the gateway's own form (OpenAI semantics)."""

    model: str
    inputs: Inputs
    tokens: bool = False  # inputs are token id arrays
    dimensions: int | None = None
    priority: int = INTERACTIVE
    cache: CacheMode = "default"
    user: str | None = None


@dataclass(slots=True)
class EmbeddingResult:
    vectors: Matrix  # one row per input, in order
    model: str  # the name the client asked for
    deployment: Deployment
    prompt_tokens: int  # all inputs, cached ones included
    cost: int  # picodollars for this request (cached texts cost nothing)
    cached: int  # inputs the exact cache answered
    request_id: str
    fallbacks: int = 0
    estimated: bool = False

    @property
    def cache_status(self) -> Literal["hit", "miss"]:
        return "hit" if self.cached == len(self.vectors) else "miss"


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
        dimensions=dimensions,
        priority=BATCH if wanted == "batch" else INTERACTIVE,
        cache=cache,
        user=user,
    )


def _is_token(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


class VectorCache:
    """The exact per-text cache: (scope, provider, model, dimensions, input) → vector and
    its token count, least recently used out first."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[Any, ...], tuple[Matrix, int]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[Any, ...]) -> tuple[Matrix, int] | None:
        found = self._entries.get(key)
        if found is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return found

    def put(self, key: tuple[Any, ...], vector: Matrix, tokens: int) -> None:
        if self.max_entries <= 0:
            return
        self._entries[key] = (vector, tokens)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


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


class EmbeddingsService:
    """Serves embedding requests for one gateway (its router, ledger and providers)."""

    def __init__(
        self,
        config: Config,
        *,
        router: Router | None = None,
        ledger: Ledger | None = None,
        providers: Mapping[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.settings = config.embeddings
        self.router = router
        self.ledger = ledger
        self.providers: Mapping[str, Any] = providers or {}
        self.cache = VectorCache(self.settings.cache_max_entries if self.settings.cache else 0)
        self._batchers: dict[tuple[str, int | None], DynamicBatcher] = {}
        self._configured = config.model_names() | set(config.routes)

    @classmethod
    def for_gateway(cls, gateway: Any) -> EmbeddingsService:
        return cls(
            gateway.config,
            router=getattr(gateway, "router", None),
            ledger=getattr(gateway, "ledger", None),
            providers=getattr(gateway, "providers", None),
        )

    # --- the pipeline -----------------------------------------------------------------

    async def embed(
        self,
        request: EmbeddingRequest,
        caller: Caller | None = None,
        request_id: str | None = None,
        *,
        gone: Callable[[], bool] | None = None,
    ) -> EmbeddingResult:
        """Embeds `request.inputs` on the first deployment that can; `gone` says whether the
        client has left (its queued local work is then dropped)."""
        caller = caller or Caller()
        request_id = request_id or uuid.uuid4().hex
        deployments = self._plan(request, caller, request_id)
        failures: list[str] = []
        refusals: list[GatewayError] = []  # 4xx answers: the request, not the deployment
        for attempt, deployment in enumerate(deployments):
            try:
                result = await self._embed_on(deployment, request, caller, request_id, gone)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure falls back to the next deployment
                error = exc if isinstance(exc, GatewayError) else None
                reason = error.message if error is not None else str(exc) or type(exc).__name__
                if error is not None and 400 <= error.status < 500:
                    refusals.append(error)
                log.warning("embeddings: %s failed (%s)", deployment.id, reason)
                failures.append(f"{deployment.id}: {reason}")
                continue
            result.fallbacks = attempt
            return result
        if refusals and len(refusals) == len(failures):
            raise refusals[0]
        raise ProviderUnavailable(
            f"no deployment could embed for {request.model!r} ({'; '.join(failures)})"
        )

    def _plan(self, request: EmbeddingRequest, caller: Caller, request_id: str) -> list[Deployment]:
        if request.model in LOCAL_MODELS and request.model not in self._configured:
            return [builtin_deployment(request.model)]
        if self.router is None:
            raise ModelNotFound(f"the model {request.model!r} does not exist")
        features = RequestFeatures(
            request_id=request_id,
            input_tokens=sum(len(x) for x in request.inputs) // (1 if request.tokens else 4),
            # Not `needs={"embeddings"}`: a model listed without capabilities (the issue's own
            # `{name: minilm, provider: local, model: minilm}`) must still serve; see below.
            priority=request.priority,
            budget_remaining=self.ledger.remaining(caller) if self.ledger is not None else None,
        )
        plan = self.router.plan(request.model, features, caller)
        if not plan.deployments:
            raise ModelNotFound(f"the model {request.model!r} has no deployment")
        # Deployments that say they embed (or are local embedders) first; if none says so,
        # the client named the model itself, so try them all in the router's order.
        able = [
            d
            for d in plan.deployments
            if "embeddings" in d.capabilities or d.kind == LOCAL_PROVIDER
        ]
        return able or list(plan.deployments)

    def _scope(self, caller: Caller) -> str:
        if self.config.cache.shared:
            return ""
        return caller.team or caller.key_name or caller.user or ""

    async def _embed_on(
        self,
        deployment: Deployment,
        request: EmbeddingRequest,
        caller: Caller,
        request_id: str,
        gone: Callable[[], bool] | None = None,
    ) -> EmbeddingResult:
        started = time.perf_counter()
        # Built-in local models are not in the router's tables: no health to track there.
        routed = self.router is not None and not deployment.id.endswith("#local")
        inputs = request.inputs
        n = len(inputs)
        scope = self._scope(caller)
        keys = [
            (scope, deployment.provider, deployment.model, request.dimensions, _key(x))
            for x in inputs
        ]
        rows: list[Matrix | None] = [None] * n
        tokens = [0] * n
        if request.cache == "default":
            for i, key in enumerate(keys):
                hit = self.cache.get(key)
                if hit is not None:
                    rows[i], tokens[i] = hit
        missing = [i for i in range(n) if rows[i] is None]
        cached = n - len(missing)
        usage = Usage()
        cost = 0
        reservation: Reservation | None = None
        if self.ledger is not None:
            worst = self._estimate_cost(deployment, [inputs[i] for i in missing], request.tokens)
            reservation = await self.ledger.reserve(caller, deployment, request_id, worst)
        if missing and routed:
            self.router.started(deployment.id)  # type: ignore[union-attr]
        try:
            if missing:
                subset: Inputs = [inputs[i] for i in missing]  # type: ignore[assignment]
                vectors, counts, usage = await self._compute(deployment, request, subset, gone)
                for j, i in enumerate(missing):
                    rows[i] = vectors[j]
                    tokens[i] = counts[j]
                    if request.cache != "no-store":
                        # A copy: a view would keep the whole batch alive per cached row.
                        self.cache.put(keys[i], vectors[j].copy(), counts[j])
                cost = deployment.price.cost(input_tokens=usage.input_tokens)
        except BaseException:
            if missing and routed:
                self.router.finished(  # type: ignore[union-attr]
                    deployment.id,
                    ok=False,
                    latency_s=time.perf_counter() - started,
                    ttft_s=None,
                    output_tokens=0,
                )
            if reservation is not None and self.ledger is not None:
                await self.ledger.release(reservation)
            raise
        latency = time.perf_counter() - started
        if missing and routed:
            self.router.finished(  # type: ignore[union-attr]
                deployment.id, ok=True, latency_s=latency, ttft_s=None, output_tokens=0
            )
        TEXTS.labels(deployment.id, "hit").inc(cached)
        TEXTS.labels(deployment.id, "miss").inc(len(missing))
        if reservation is not None and self.ledger is not None:
            await self.ledger.settle(
                reservation,
                LedgerRecord(
                    request_id=request_id,
                    caller=caller,
                    route=request.model,
                    deployment=deployment.id,
                    provider=deployment.provider,
                    model=deployment.model,
                    usage=usage,
                    cost=cost,
                    latency_ms=latency * 1000.0,
                    ttft_ms=None,
                    status=200,
                    cache="hit" if not missing else "miss",
                ),
            )
        matrix = np.stack(rows) if n else np.empty((0, 0), dtype=np.float32)  # type: ignore[arg-type]
        return EmbeddingResult(
            vectors=matrix.astype(np.float32, copy=False),
            model=request.model,
            deployment=deployment,
            prompt_tokens=sum(tokens),
            cost=cost,
            cached=cached,
            request_id=request_id,
            estimated=usage.estimated,
        )

    def _estimate_cost(self, deployment: Deployment, inputs: Sequence[Any], tokens: bool) -> int:
        if not inputs:
            return 0
        if tokens:
            count = sum(len(x) for x in inputs)
        else:
            from hybridfast.pricing import estimate_tokens

            # Generous: an estimate below the real count would let a request overspend.
            count = sum(estimate_tokens(deployment.kind, deployment.model, x) for x in inputs)
            count = count * 2 + len(inputs)
        return deployment.price.cost(input_tokens=count)

    async def _compute(
        self,
        deployment: Deployment,
        request: EmbeddingRequest,
        inputs: Inputs,
        gone: Callable[[], bool] | None = None,
    ) -> tuple[Matrix, list[int], Usage]:
        if deployment.kind == LOCAL_PROVIDER:
            return await self._compute_local(deployment, request, inputs, gone)
        provider = self.providers.get(deployment.provider)
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
            from hybridfast.pricing import estimate_tokens

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
        if request.tokens:
            if not isinstance(embedder, MiniLMEmbedder):
                raise InvalidRequest(f"the local model {name!r} takes text input only")
            ids: list[list[int]] = inputs  # type: ignore[assignment]
            vectors, counts = await asyncio.to_thread(embedder.embed_ids, ids)
        else:
            texts: list[str] = inputs  # type: ignore[assignment]
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


def _key(item: str | list[int]) -> str | tuple[int, ...]:
    return item if isinstance(item, str) else tuple(item)


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


# The service of each running gateway, made on first use: the gateway object owns the router,
# ledger and providers, this module owns the batchers and the vector cache.
_services: weakref.WeakKeyDictionary[Any, EmbeddingsService] = weakref.WeakKeyDictionary()


def service_for(gateway: Any) -> EmbeddingsService:
    found = getattr(gateway, "embeddings", None)
    if isinstance(found, EmbeddingsService):
        return found
    service = _services.get(gateway)
    if service is None:
        service = EmbeddingsService.for_gateway(gateway)
        _services[gateway] = service
    return service


async def close_service(gateway: Any) -> None:
    """Stops the batchers of `gateway`'s service (the app calls it on shutdown)."""
    service = _services.pop(gateway, None)
    if service is not None:
        await service.close()
