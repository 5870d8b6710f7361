"""The embeddings pipeline, read top to bottom — the same steps and the same attempt
mechanism as chat (`pipeline/chat.py`):

    admit     validate, then the `before_route` hooks
    route     the router's plan (`minilm` and `hashing` are built in when the config does
              not name them: they need no plan)
    attempts  the one fallback loop: for each deployment, per-text cache lookup, then one
              `DeploymentAttempt` (hold → compute only the texts not cached → settle or
              release) and the per-text cache store
    finally   the request's one ledger line, the `after_answer` hooks (`RequestScope`)

The per-text cache is a native `ExactTable` keyed by (tenant, provider, model, dimensions,
input): the vector and its token count, least recently used out first.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncGenerator, Callable, Mapping

import msgspec
import numpy as np

from hybridfast._core import ExactTable
from hybridfast.config import LOCAL_PROVIDER, Config
from hybridfast.embeddings.pipeline import TEXTS, EmbeddingEngine, Inputs, Matrix
from hybridfast.errors import (
    GatewayError,
    ModelNotFound,
    ProviderUnavailable,
    to_gateway_error,
)
from hybridfast.pipeline.attempt import DeploymentAttempt, Parts, RequestBooks, RequestScope
from hybridfast.pipeline.context import RequestContext
from hybridfast.pipeline.fallback import Failures, fallback
from hybridfast.providers.base import Provider
from hybridfast.types import (
    Caller,
    Deployment,
    EmbeddingRequest,
    EmbeddingResult,
    RequestFeatures,
    Usage,
)

log = logging.getLogger("hybridfast.embeddings")

# Cached vectors do not go stale: an entry leaves when the table is full, not with time.
_NEVER_S = 10 * 365 * 86400.0
_KEY_ENCODER = msgspec.msgpack.Encoder()


class _Unrouted:
    """The router of built-in local models: not in the router's tables, no health to track."""

    def started(self, deployment_id: str) -> None:
        pass

    def finished(self, deployment_id: str, **outcome: object) -> None:
        pass

    def abandoned(self, deployment_id: str) -> None:
        pass


class TextCache:
    """Embeddings by exact input text (or token ids), in the native exact table."""

    def __init__(self, max_entries: int) -> None:
        self.table = ExactTable(max_entries)

    @staticmethod
    def key(scope: str, deployment: Deployment, dimensions: int | None, item: object) -> bytes:
        raw = _KEY_ENCODER.encode((scope, deployment.provider, deployment.model, dimensions, item))
        return hashlib.blake2b(raw, digest_size=16).digest()

    def get(self, key: bytes) -> tuple[Matrix, int] | None:
        raw = self.table.get(key)
        if raw is None:
            return None
        return np.frombuffer(raw, dtype="<f4", offset=4), int.from_bytes(raw[:4], "little")

    def put(self, key: bytes, vector: Matrix, tokens: int) -> None:
        value = tokens.to_bytes(4, "little") + vector.astype("<f4", copy=False).tobytes()
        self.table.put(key, value, _NEVER_S)


class EmbeddingsFlow:
    """The embeddings pipeline over one gateway's parts."""

    def __init__(
        self,
        parts: Parts,
        config: Config,
        providers: Mapping[str, Provider],
        engine: EmbeddingEngine,
    ) -> None:
        self.parts = parts
        self.unrouted = Parts(_Unrouted(), parts.ledger, parts.hooks)  # type: ignore[arg-type]
        self.config = config
        self.providers = providers
        self.engine = engine
        settings = config.embeddings
        self.cache = (
            TextCache(settings.cache_max_entries)
            if settings.cache and settings.cache_max_entries > 0
            else None
        )

    async def embed(
        self,
        request: EmbeddingRequest,
        ctx: RequestContext,
        *,
        gone: Callable[[], bool] | None = None,
    ) -> EmbeddingResult:
        """Embeds `request.inputs` on the first deployment that can; `gone` says whether the
        client has left (its queued local work is then dropped)."""
        async with RequestScope(self.parts, ctx, request) as scope:
            changed = await self.admit(request, ctx)
            scope.request = request = changed
            deployments = self.route(request, ctx)
            scope.books.on_books = True
            result = self.from_cache(request, ctx, deployments[0])
            if result is None:
                call = EmbedCall(self, request, ctx, scope.books, gone)
                async for answer in fallback(ctx, deployments, call):  # a one-item stream
                    result = answer
                assert result is not None
                result.cost = scope.books.spent_cost
            result.fallbacks = ctx.fallbacks
            scope.answer = result
            return result
        raise AssertionError("unreachable")  # pragma: no cover - the scope re-raises

    async def admit(self, request: EmbeddingRequest, ctx: RequestContext) -> EmbeddingRequest:
        ctx.route = request.model
        if self.parts.hooks.has("before_route"):
            changed = await self.parts.hooks.run_before_route(ctx, request)
            if not isinstance(changed, EmbeddingRequest):
                raise TypeError("a before_route hook returned a chat request for embeddings")
            request = changed
        return request

    def route(self, request: EmbeddingRequest, ctx: RequestContext) -> list[Deployment]:
        builtin = self.engine.builtin(request.model)
        if builtin is not None:
            return [builtin]
        features = RequestFeatures(
            request_id=ctx.request_id,
            input_tokens=sum(len(x) for x in request.inputs) // (1 if request.tokens else 4),
            # Not `needs={"embeddings"}`: a model listed without capabilities
            # (`{name: minilm, provider: local, model: minilm}`) must still serve; see below.
            priority=request.priority,
            budget_remaining=self.parts.ledger.remaining(ctx.caller),
        )
        try:
            plan = self.parts.router.plan(request.model, features, ctx.caller)
        except Exception as exc:
            raise to_gateway_error(exc) from None
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

    def from_cache(
        self, request: EmbeddingRequest, ctx: RequestContext, dep: Deployment
    ) -> EmbeddingResult | None:
        """The answer when the cache has every text for the first deployment: nothing is
        held or called (and the request still gets its ledger line)."""
        if self.cache is None or request.cache != "default":
            return None
        _, rows, tokens = self._cached(request, ctx.caller, dep)
        if any(row is None for row in rows):
            return None
        ctx.deployment = dep
        return self.result(request, ctx, dep, (rows, tokens), 0, Usage())

    def result(
        self,
        request: EmbeddingRequest,
        ctx: RequestContext,
        dep: Deployment,
        found: tuple[list[Matrix | None], list[int]],
        computed: int,
        usage: Usage,
    ) -> EmbeddingResult:
        rows, tokens = found
        n = len(rows)
        TEXTS.inc((dep.id, "hit"), n - computed)
        TEXTS.inc((dep.id, "miss"), computed)
        consulted = self.cache is not None and request.cache == "default"
        ctx.cache = "hit" if not computed else "miss" if consulted else "bypass"
        matrix = np.stack(rows) if n else np.empty((0, 0), dtype=np.float32)  # type: ignore[arg-type]
        return EmbeddingResult(
            vectors=matrix.astype(np.float32, copy=False),
            model=request.model,
            deployment=dep,
            prompt_tokens=sum(tokens),
            cost=0,
            cached=n - computed,
            request_id=ctx.request_id,
            estimated=usage.estimated,
        )

    def _cached(
        self, request: EmbeddingRequest, caller: Caller, dep: Deployment
    ) -> tuple[list[bytes], list[Matrix | None], list[int]]:
        n = len(request.inputs)
        rows: list[Matrix | None] = [None] * n
        tokens = [0] * n
        if self.cache is None or request.cache == "no-store":
            return [], rows, tokens
        shared = self.config.cache.shared
        scope = "" if shared else (caller.team or caller.key_name or caller.user or "")
        # The same ids mean different text in different encodings: the encoding is in the key.
        items = (
            [(request.token_encoding, x) for x in request.inputs]
            if request.tokens
            else request.inputs
        )
        keys = [self.cache.key(scope, dep, request.dimensions, x) for x in items]
        if request.cache == "default":
            for i, key in enumerate(keys):
                hit = self.cache.get(key)
                if hit is not None:
                    rows[i], tokens[i] = hit
        return keys, rows, tokens


class EmbedCall:
    """Embeddings on one deployment after another: an `Endpoint` of the fallback loop. Each
    deployment answers the texts its cache lacks in one attempt (a one-item stream)."""

    __slots__ = ("books", "ctx", "flow", "gone", "pending", "request")

    def __init__(
        self,
        flow: EmbeddingsFlow,
        request: EmbeddingRequest,
        ctx: RequestContext,
        books: RequestBooks,
        gone: Callable[[], bool] | None,
    ) -> None:
        self.flow = flow
        self.request = request
        self.ctx = ctx
        self.books = books
        self.gone = gone
        # The deployment's cache keys, rows (None: to compute) and token counts.
        self.pending: tuple[list[bytes], list[Matrix | None], list[int]] = ([], [], [])

    def attempt(self, deployment: Deployment, index: int, count: int) -> DeploymentAttempt:
        request, flow = self.request, self.flow
        self.pending = keys_rows = flow._cached(request, self.ctx.caller, deployment)
        missing = [request.inputs[i] for i, row in enumerate(keys_rows[1]) if row is None]
        worst = EmbeddingEngine.worst_case(deployment, missing, request.tokens)
        # Built-in local models are not in the router's tables: no health to track there.
        parts = flow.unrouted if deployment.id.endswith("#local") or not missing else flow.parts
        return DeploymentAttempt(parts, self.ctx, self.books, deployment, index, worst)

    async def run(self, attempt: DeploymentAttempt) -> AsyncGenerator[EmbeddingResult, None]:
        request, flow, dep = self.request, self.flow, attempt.deployment
        keys, rows, tokens = self.pending
        missing = [i for i, row in enumerate(rows) if row is None]
        usage = Usage()
        if missing:
            subset: Inputs = [request.inputs[i] for i in missing]  # type: ignore[assignment]
            provider = flow.providers.get(dep.provider)
            vectors, counts, usage = await flow.engine.compute(
                dep, request, subset, provider, self.gone
            )
            attempt.done(usage)  # unusable counts fail the attempt before anything is kept
            for j, i in enumerate(missing):
                rows[i], tokens[i] = vectors[j], counts[j]
                if flow.cache is not None and request.cache != "no-store":
                    flow.cache.put(keys[i], vectors[j], counts[j])
        else:
            attempt.done(usage)
        attempt.output_started(attempt.info.started)
        yield flow.result(request, self.ctx, dep, (rows, tokens), len(missing), usage)

    def refusal_ends(self) -> bool:
        return False  # one deployment's 4xx (dimensions, token input) may suit another

    def can_continue(self, is_last: bool) -> bool:
        return False

    def nobody_answered(self, failures: Failures) -> GatewayError:
        for reason in failures.reasons:
            log.warning("embeddings: %s failed", reason)
        if failures.refusals and len(failures.refusals) == len(failures.reasons):
            return failures.refusals[0]
        if failures.over_budget is not None and not failures.reasons:
            return failures.over_budget
        return ProviderUnavailable(
            f"no deployment could embed for {self.request.model!r} ({'; '.join(failures.reasons)})"
        )
