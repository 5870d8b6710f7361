"""The request pipeline, and `Gateway`, the object that runs it.

Every chat request — from the HTTP server, the `route` CLI or the Python API — goes through
the same steps, in this order:

    validate → cache lookup → route → reserve budget → call with fallback → stream
             → settle cost (or release) → cache store

`complete()` runs them for a whole answer, `stream_events()` for a stream (an async
generator of event batches: its first batch arrives only after an upstream produced a
byte, so a failure before that is a silent fallback). A stream that breaks mid-way is
continued on the next deployment with the partial answer as an assistant prefix
(`server.stream_recovery`).

The parts are reached only through the protocols in `hybridfast.types` (`Router`, `Ledger`,
`ResponseCache`) and the `providers`. Money is integer picodollars.

    async with Gateway.from_config("hybridfast.yaml") as gw:
        result = await gw.chat("Hello", model="auto")
        print(result.text, result.cost_usd)
        async for event in gw.stream("Tell me a story"):
            print(event.text or "", end="")
"""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import msgspec

from hybridfast import metrics
from hybridfast._core import HybridfastError, format_usd
from hybridfast.config import Config, load_config
from hybridfast.deployments import build_deployments
from hybridfast.errors import (
    BudgetExceeded,
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    ProviderUnavailable,
)
from hybridfast.pipeline.hooks import Hooks
from hybridfast.pricing import configure as configure_prices
from hybridfast.pricing import estimate_tokens
from hybridfast.providers import Provider, ProviderError, StreamEvent, build_providers
from hybridfast.types import (
    CacheHit,
    CacheResult,
    Caller,
    ChatAnswer,
    ChatRequest,
    Deployment,
    Ledger,
    LedgerRecord,
    RequestFeatures,
    Reservation,
    ResponseCache,
    RoutePlan,
    Router,
    Usage,
)

log = logging.getLogger("hybridfast.gateway")

ANONYMOUS = Caller()
# The output a request may produce when neither it nor the deployment says: what the budget
# reservation assumes.
DEFAULT_MAX_OUTPUT_TOKENS = 4096
# The generation rate a budget hold assumes for a deployment priced per GPU-second.
SLOW_TOKENS_PER_S = 10.0
CONTINUE_PROMPT = (
    "Your previous answer was cut off. Continue it exactly where it stopped, without "
    "repeating anything and without any preamble."
)
_ID_PREFIX = secrets.token_hex(4)
_ID_COUNTER = itertools.count(1)
_perf = time.perf_counter


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):010x}"


# --- what a request's answer says about itself ------------------------------------------


class CallInfo:
    """Bookkeeping of one request: what the headers and the final stream event report."""

    __slots__ = (
        "arm",
        "cache",
        "cost",
        "deployment",
        "deployments",
        "ended",
        "fallbacks",
        "first_byte",
        "input_estimate",
        "recovered",
        "request_id",
        "route",
        "similarity",
        "started",
        "status",
        "stream",
        "upstream_s",
        "usage",
    )

    def __init__(self, route: str = "", request_id: str | None = None) -> None:
        self.request_id = request_id or new_request_id()
        self.route = route
        self.started = _perf()
        self.deployment: Deployment | None = None
        self.deployments: list[str] = []  # every deployment that produced part of the answer
        self.cache: CacheResult = "miss"
        self.cost = 0
        self.usage = Usage()
        self.fallbacks = 0
        self.recovered = False
        self.upstream_s = 0.0  # time spent waiting on upstreams
        self.first_byte: float | None = None  # perf_counter at the first upstream byte
        self.ended: float | None = None
        self.status = 200
        self.stream = False
        self.input_estimate = 0
        self.arm: str | None = None  # the A/B arm of a `weighted` route
        self.similarity: float | None = None  # of the question a cache hit answered

    @property
    def deployment_id(self) -> str:
        return self.deployment.id if self.deployment is not None else "none"

    @property
    def cost_usd(self) -> str:
        return format_usd(self.cost)

    def overhead_s(self) -> float:
        """The gateway's own time: elapsed (to the first byte for a stream in flight) minus
        the time spent waiting on upstreams."""
        end = self.ended or _perf()
        return max(0.0, end - self.started - self.upstream_s)

    def headers(self, *, cost_known: bool = True) -> dict[str, str]:
        headers = {
            "x-hybridfast-request-id": self.request_id,
            "x-hybridfast-deployment": self.deployment_id,
            "x-hybridfast-cost-usd": format_usd(self.cost) if cost_known else "pending",
            "x-hybridfast-cache": self.cache,
            "x-hybridfast-overhead-ms": f"{self.overhead_s() * 1000:.3f}",
        }
        if self.arm is not None:
            headers["x-hybridfast-arm"] = self.arm
        if self.cache == "semantic-hit" and self.similarity is not None:
            headers["x-hybridfast-cache-similarity"] = f"{self.similarity:.4f}"
        return headers

    def meta(self) -> dict[str, Any]:
        """The `x_hybridfast` object of answers and of a stream's final event."""
        meta: dict[str, Any] = {
            "request_id": self.request_id,
            "deployment": self.deployment_id,
            "cost_usd": format_usd(self.cost),
            "cache": self.cache,
        }
        if self.arm is not None:
            meta["arm"] = self.arm
        if self.cache == "semantic-hit" and self.similarity is not None:
            meta["similarity"] = round(self.similarity, 4)
        if self.fallbacks:
            meta["fallbacks"] = self.fallbacks
        if self.recovered:
            meta["recovered"] = True
            meta["deployments"] = self.deployments
        if self.usage.estimated:
            meta["usage_estimated"] = True
        return meta


@dataclass(slots=True)
class ChatResult:
    """A finished answer from the Python API."""

    answer: ChatAnswer
    info: CallInfo

    @property
    def text(self) -> str:
        return self.answer.content

    @property
    def cost(self) -> int:
        """Picodollars."""
        return self.info.cost

    @property
    def cost_usd(self) -> str:
        return self.info.cost_usd

    @property
    def deployment(self) -> str:
        return self.info.deployment_id

    @property
    def usage(self) -> Usage:
        return self.info.usage


class ChatStream:
    """An answer as it arrives from the Python API: iterate for `StreamEvent`s (`.text`);
    `info` holds the deployment and, once the stream ended, the exact cost."""

    def __init__(self, events: AsyncGenerator[list[StreamEvent], None], info: CallInfo) -> None:
        self._events = events
        self.info = info

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[StreamEvent]:
        try:
            async for batch in self._events:
                for event in batch:
                    if event.text or event.tool_calls or event.finish_reason:
                        yield event
        finally:
            await self._events.aclose()

    async def text(self) -> str:
        return "".join([e.text async for e in self if e.text])


# --- errors ------------------------------------------------------------------------------

_CORE_CODES: dict[str, type[GatewayError]] = {
    "ERR_BUDGET_EXCEEDED": BudgetExceeded,
    "ERR_NOT_FOUND": ModelNotFound,
    "ERR_MODEL_NOT_FOUND": ModelNotFound,
    "ERR_NO_CANDIDATES": ProviderUnavailable,
    "ERR_INVALID_REQUEST": InvalidRequest,
}


def to_gateway_error(exc: BaseException) -> GatewayError:
    """Any error the pipeline can raise, as the `GatewayError` a user sees."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, HybridfastError):
        code = getattr(exc, "code", "ERR_INTERNAL")
        cls = _CORE_CODES.get(code)
        if cls is not None:
            if cls is ProviderUnavailable:
                return ProviderUnavailable(str(exc), status=503)
            return cls(str(exc))
        return GatewayError(str(exc), code=code)
    return GatewayError("internal error", hint="the gateway log has the details")


def _is_budget_error(exc: BaseException) -> bool:
    return isinstance(exc, BudgetExceeded) or (
        isinstance(exc, HybridfastError) and getattr(exc, "code", "") == "ERR_BUDGET_EXCEEDED"
    )


def _unavailable(last: ProviderError | None, route: str) -> ProviderUnavailable:
    if last is None:
        return ProviderUnavailable(f"no deployment of {route!r} could be called")
    status = last.status
    headers = {}
    if status == 429 and last.retry_after is not None:
        headers["Retry-After"] = str(int(last.retry_after + 0.999))
    http_status = status if status is not None and (status == 429 or status >= 500) else 502
    if status is None and "timed out" in last.message:
        http_status = 504
    return ProviderUnavailable(
        f"every deployment of {route!r} failed; the last: {last.message}",
        status=http_status,
        headers=headers,
    )


# --- helpers -----------------------------------------------------------------------------


def prompt_text(request: ChatRequest) -> str:
    parts: list[str] = []
    for m in request.messages:
        content = m.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p.get("text", "") for p in content if p.get("type") == "text")
    return "\n".join(parts)


def _needs(request: ChatRequest) -> frozenset[str]:
    needs = []
    if request.tools:
        needs.append("tools")
    if request.response_format is not None:
        needs.append("json")
    for m in request.messages:
        content = m.get("content")
        if isinstance(content, list) and any(p.get("type") == "image_url" for p in content):
            needs.append("vision")
            break
    return frozenset(needs)


def _add_usage(a: Usage, b: Usage) -> Usage:
    return Usage(
        input_tokens=a.input_tokens + b.input_tokens,
        output_tokens=a.output_tokens + b.output_tokens,
        cached_input_tokens=a.cached_input_tokens + b.cached_input_tokens,
        cache_write_tokens=a.cache_write_tokens + b.cache_write_tokens,
        reasoning_tokens=a.reasoning_tokens + b.reasoning_tokens,
        estimated=a.estimated or b.estimated,
    )


def _cost(deployment: Deployment, usage: Usage, seconds: float) -> int:
    """Tokens at the deployment's prices, plus the upstream's time for a local GPU priced per
    GPU-second (exact price × measured time, rounded to the picodollar)."""
    tokens = deployment.price.cost(
        usage.input_tokens,
        usage.output_tokens,
        usage.cached_input_tokens,
        usage.cache_write_tokens,
        usage.reasoning_tokens,
    )
    return int(tokens) + round(deployment.gpu_second * max(seconds, 0.0))


def continuation(request: ChatRequest, partial: str, kind: str) -> ChatRequest:
    """The request that continues a broken answer: the partial answer as an assistant turn
    (Anthropic continues a final assistant turn natively; the others are asked to)."""
    messages = [*request.messages, {"role": "assistant", "content": partial}]
    if kind != "anthropic":
        messages.append({"role": "user", "content": CONTINUE_PROMPT})
    return msgspec.structs.replace(request, messages=messages)


def _split_for_replay(text: str, pieces: int = 8) -> list[str]:
    if not text:
        return []
    words = text.split(" ")
    step = max(1, -(-len(words) // pieces))
    out = []
    for i in range(0, len(words), step):
        piece = " ".join(words[i : i + step])
        out.append(piece if i == 0 else " " + piece)
    return out


class _Tools:
    """Tool-call pieces of a stream, put together."""

    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls: dict[int, dict[str, Any]] = {}

    def add(self, deltas: list[dict[str, Any]]) -> None:
        for d in deltas:
            call = self.calls.get(d.get("index", 0))
            if call is None:
                call = self.calls[d.get("index", 0)] = {
                    "id": None,
                    "type": "function",
                    "function": {"name": "", "arguments": ""},
                }
            if d.get("id"):
                call["id"] = d["id"]
            if d.get("name"):
                call["function"]["name"] = d["name"]
            call["function"]["arguments"] += d.get("arguments") or ""

    def done(self) -> list[dict[str, Any]]:
        return [self.calls[i] for i in sorted(self.calls)]


# --- the gateway -------------------------------------------------------------------------


class Gateway:
    """The pipeline and the parts it calls. Open it (`async with`, or `await open()`)
    before use; `close()` flushes the ledger and closes upstream connections."""

    def __init__(
        self,
        config: Config,
        *,
        deployments: Sequence[Deployment] | None = None,
        router: Router | None = None,
        ledger: Ledger | None = None,
        cache: ResponseCache | None = None,
        providers: dict[str, Provider] | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        self.config = config
        # The seams where guardrails, rate limits, tracing and the request log attach.
        self.hooks = hooks if hooks is not None else Hooks()
        if deployments is None:
            # A LiteLLM price map in config prices deployments too, not just the ledger.
            configure_prices(config.ledger.prices_file)
        self.deployments = (
            list(deployments) if deployments is not None else build_deployments(config)
        )
        self._by_id = {d.id: d for d in self.deployments}
        # Parts given here are used as they are; the others are built by `open()`.
        self._given: tuple[Router | None, Ledger | None, ResponseCache | None] = (
            router,
            ledger,
            cache,
        )
        self.router: Router
        self.ledger: Ledger
        self.cache: ResponseCache
        self.providers: dict[str, Provider] = (
            providers if providers is not None else build_providers(config)
        )
        self._opened = False
        self._recovery = config.server.stream_recovery
        # With both caches switched off there is nothing to look up or store.
        self._caching = config.cache.exact.enabled or config.cache.semantic.enabled

    @classmethod
    def from_config(cls, source: str | Path | Config | None = None) -> Gateway:
        """From a YAML file (None: `$HYBRIDFAST_CONFIG`, `./hybridfast.yaml`, else the
        environment's defaults) or a `Config`."""
        config = (
            source
            if isinstance(source, Config)
            else load_config(None if source is None else str(source)).config
        )
        return cls(config)

    async def open(self) -> Gateway:
        if self._opened:
            return self
        from hybridfast.cache import open_cache
        from hybridfast.ledger import open_ledger
        from hybridfast.routing import build_router

        router, ledger, cache = self._given
        self.router = router if router is not None else build_router(self.config, self.deployments)
        self.ledger = ledger if ledger is not None else await open_ledger(self.config)
        self.cache = cache if cache is not None else await open_cache(self.config)
        self._opened = True
        return self

    async def close(self) -> None:
        from hybridfast.embeddings.pipeline import close_service

        await close_service(self)  # the embedding batchers, if any request started them
        for provider in self.providers.values():
            await provider.close()
        if self._opened:
            await self.cache.close()
            await self.ledger.close()
            close = getattr(self.router, "close", None)
            if close is not None:
                result = close()
                if hasattr(result, "__await__"):
                    await result
        self._opened = False

    async def __aenter__(self) -> Gateway:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- the Python API ------------------------------------------------------------------

    def request(
        self,
        prompt: str | list[dict[str, Any]] | ChatRequest,
        *,
        model: str = "auto",
        stream: bool = False,
        **params: Any,
    ) -> ChatRequest:
        """A `ChatRequest` from a prompt or OpenAI-shaped messages and parameters."""
        if isinstance(prompt, ChatRequest):
            return msgspec.structs.replace(prompt, stream=stream, **params)
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        from hybridfast.protocols.openai import check_messages

        try:
            return ChatRequest(
                model=model, messages=check_messages(messages), stream=stream, **params
            )
        except TypeError as exc:
            raise InvalidRequest(f"unknown parameter: {exc}") from None

    async def chat(
        self,
        prompt: str | list[dict[str, Any]] | ChatRequest,
        *,
        model: str = "auto",
        caller: Caller = ANONYMOUS,
        **params: Any,
    ) -> ChatResult:
        """One whole answer through the pipeline."""
        request = self.request(prompt, model=model, **params)
        info = CallInfo(request.model)
        answer = await self.complete(request, caller, info)
        return ChatResult(answer, info)

    def stream(
        self,
        prompt: str | list[dict[str, Any]] | ChatRequest,
        *,
        model: str = "auto",
        caller: Caller = ANONYMOUS,
        **params: Any,
    ) -> ChatStream:
        """An answer as it arrives: `async for event in gw.stream(...)`."""
        request = self.request(prompt, model=model, stream=True, **params)
        info = CallInfo(request.model)
        return ChatStream(self.stream_events(request, caller, info), info)

    def plan(self, request: ChatRequest, caller: Caller = ANONYMOUS) -> RoutePlan:
        """The routing decision for `request`, without calling anything (`route --dry-run`)."""
        info = CallInfo(request.model)
        return self.router.plan(request.model, self._features(request, caller, info), caller)

    # --- pipeline steps ------------------------------------------------------------------

    def _features(self, request: ChatRequest, caller: Caller, info: CallInfo) -> RequestFeatures:
        info.input_estimate = estimate_tokens("", request.model, prompt_text(request))
        return RequestFeatures(
            request_id=info.request_id,
            input_tokens=info.input_estimate,
            max_output_tokens=request.max_tokens,
            stream=request.stream,
            needs=_needs(request),
            tags=caller.tags,
            budget_remaining=self.ledger.remaining(caller),
        )

    async def _begin(
        self, request: ChatRequest, caller: Caller, info: CallInfo
    ) -> CacheHit | RoutePlan:
        """validate → cache lookup → route."""
        if not request.messages:
            raise InvalidRequest("`messages` must be a non-empty list")
        info.route = request.model
        info.stream = request.stream
        if request.cache_control == "default" and self._caching:
            hit = await self.cache.lookup(request, caller)
            if hit is not None:
                return hit
            if self.cache.bypass(request):  # e.g. sampled: neither looked up nor kept
                info.cache = "bypass"
        else:
            info.cache = "bypass"
        features = self._features(request, caller, info)
        try:
            plan = self.router.plan(request.model, features, caller)
        except HybridfastError as exc:
            error = exc if isinstance(exc, GatewayError) else to_gateway_error(exc)
            if isinstance(error, BudgetExceeded):  # a refusal is spend policy: on the books
                await self._record_failure(request, caller, info, error)
            raise error from None
        info.arm = plan.arm
        return plan

    def _worst_case(self, deployment: Deployment, request: ChatRequest, input_tokens: int) -> int:
        out = request.max_tokens or deployment.max_output_tokens or DEFAULT_MAX_OUTPUT_TOKENS
        worst = int(deployment.price.cost(input_tokens, out))
        if deployment.gpu_second:
            # GPU time has no token bound: hold for the whole output at a slow generation rate.
            seconds = out / min(deployment.tokens_per_s or SLOW_TOKENS_PER_S, SLOW_TOKENS_PER_S)
            worst += round(deployment.gpu_second * seconds)
        return worst

    def _estimate(self, deployment: Deployment, input_tokens: int, output_text: str) -> Usage:
        return Usage(
            input_tokens=input_tokens,
            output_tokens=estimate_tokens(deployment.kind, deployment.model, output_text),
            estimated=True,
        )

    async def _reserve(
        self, caller: Caller, deployment: Deployment, info: CallInfo, worst_case: int
    ) -> Reservation:
        return await self.ledger.reserve(caller, deployment, info.request_id, worst_case)

    async def _settle(
        self,
        reservation: Reservation,
        request: ChatRequest,
        caller: Caller,
        info: CallInfo,
        *,
        saved_cost: int = 0,
        ttft_s: float | None = None,
    ) -> None:
        info.ended = _perf()
        dep = info.deployment
        record = LedgerRecord(
            request_id=info.request_id,
            caller=caller,
            route=request.model,
            deployment=dep.id if dep is not None else None,
            provider=dep.provider if dep is not None else None,
            model=dep.model if dep is not None else None,
            usage=info.usage,
            cost=info.cost,
            latency_ms=(info.ended - info.started) * 1000,
            ttft_ms=ttft_s * 1000 if ttft_s is not None else None,
            status=info.status,
            cache=info.cache,
            fallbacks=info.fallbacks,
            saved_cost=saved_cost,
        )
        await self.ledger.settle(reservation, record)
        # Request metrics, the request log and the log line are recorded by the server's
        # observability middleware (hybridfast.server.observability), once per request.

    async def _record_failure(
        self, request: ChatRequest, caller: Caller, info: CallInfo, error: GatewayError
    ) -> None:
        """A request nobody answered still gets its line in the ledger (cost 0)."""
        info.status = error.status
        metrics.ERRORS.inc((info.deployment_id, str(error.status), error.code))
        first = next(iter(self.deployments), None) if info.deployment is None else info.deployment
        if first is None:
            return
        try:
            reservation = await self._reserve(caller, first, info, 0)
            await self._settle(reservation, request, caller, info)
        except Exception:  # the answer is an error already; do not replace it with another
            log.warning("could not record the failed request %s", info.request_id, exc_info=True)

    async def _answer_hit(
        self, hit: CacheHit, request: ChatRequest, caller: Caller, info: CallInfo
    ) -> None:
        info.cache = hit.kind
        info.similarity = hit.similarity
        info.deployment = self._by_id.get(hit.answer.deployment)
        info.usage = hit.answer.usage
        info.cost = 0
        dep = info.deployment or next(iter(self.deployments), None)
        if dep is not None:
            reservation = await self._reserve(caller, dep, info, 0)
        else:
            reservation = Reservation(request_id=info.request_id, amount=0)
        await self._settle(reservation, request, caller, info, saved_cost=hit.answer.cost)

    def _retries(self, provider: Provider, index: int, plan: RoutePlan) -> int:
        # Retry in place only on the last candidate: before it, falling back is faster.
        return provider.config.max_retries if index == len(plan.deployments) - 1 else 0

    async def complete(
        self, request: ChatRequest, caller: Caller = ANONYMOUS, info: CallInfo | None = None
    ) -> ChatAnswer:
        """A whole answer: the pipeline for non-streaming requests."""
        info = info if info is not None else CallInfo(request.model)
        begun = await self._begin(request, caller, info)
        if isinstance(begun, CacheHit):
            await self._answer_hit(begun, request, caller, info)
            return begun.answer
        plan = begun
        last: ProviderError | None = None
        budget_error: BaseException | None = None
        for index, dep in enumerate(plan.deployments):
            provider = self.providers.get(dep.provider)
            if provider is None:
                continue
            try:
                reservation = await self._reserve(
                    caller, dep, info, self._worst_case(dep, request, info.input_estimate)
                )
            except Exception as exc:
                if not _is_budget_error(exc):
                    raise
                budget_error = exc
                continue
            self.router.started(dep.id)
            t0 = _perf()
            try:
                answer = await provider.chat(
                    dep, request, retries=self._retries(provider, index, plan)
                )
            except ProviderError as exc:
                elapsed = _perf() - t0
                info.upstream_s += elapsed
                if exc.client_fault:  # the request's fault, not the deployment's
                    self.router.abandoned(dep.id)
                else:
                    self.router.finished(
                        dep.id, ok=False, latency_s=elapsed, ttft_s=None, output_tokens=0
                    )
                await self.ledger.release(reservation)
                metrics.ERRORS.inc((dep.id, str(exc.status or 0), "ERR_UPSTREAM"))
                log.info("request %s: %s", info.request_id, exc.message)
                if exc.client_fault:
                    error: GatewayError = InvalidRequest(exc.message, status=exc.status or 400)
                    await self._record_failure(request, caller, info, error)
                    raise error from None
                last = exc
                info.fallbacks += 1
                continue
            except BaseException:
                self.router.abandoned(dep.id)  # cancelled: says nothing of the deployment
                await self.ledger.release(reservation)
                raise
            elapsed = _perf() - t0
            info.upstream_s += elapsed
            info.deployment = dep
            info.deployments.append(dep.id)
            if answer.usage.estimated:
                answer.usage = self._estimate(
                    dep,
                    info.input_estimate,
                    answer.content + "".join(c["function"]["arguments"] for c in answer.tool_calls),
                )
            info.usage = answer.usage
            info.cost = answer.cost = _cost(dep, answer.usage, elapsed)
            answer.deployment = dep.id
            self.router.finished(
                dep.id,
                ok=True,
                latency_s=elapsed,
                ttft_s=None,
                output_tokens=answer.usage.output_tokens,
            )
            await self._settle(reservation, request, caller, info)
            if self._caching and request.cache_control != "no-store":
                await self.cache.store(request, caller, answer)
            return answer
        if budget_error is not None and last is None:
            error = to_gateway_error(budget_error)
        else:
            error = _unavailable(last, request.model)
        await self._record_failure(request, caller, info, error)
        raise error

    async def stream_events(
        self, request: ChatRequest, caller: Caller = ANONYMOUS, info: CallInfo | None = None
    ) -> AsyncGenerator[list[StreamEvent], None]:
        """The answer as batches of events; the pipeline for streaming requests. The first
        batch comes only once an upstream produced a byte. When it ends normally, `info`
        holds the exact cost; a break that no deployment can continue raises a
        `GatewayError` after the partial answer."""
        info = info if info is not None else CallInfo(request.model)
        begun = await self._begin(request, caller, info)
        if isinstance(begun, CacheHit):
            answer = begun.answer
            info.cache = begun.kind
            info.similarity = begun.similarity
            info.first_byte = _perf()
            batch = [StreamEvent(piece) for piece in _split_for_replay(answer.content)]
            if answer.tool_calls:
                batch.append(
                    StreamEvent(
                        tool_calls=[
                            {
                                "index": i,
                                "id": c.get("id"),
                                "name": c["function"]["name"],
                                "arguments": c["function"]["arguments"],
                            }
                            for i, c in enumerate(answer.tool_calls)
                        ]
                    )
                )
            batch.append(StreamEvent(finish_reason=answer.finish_reason))
            info.deployment = self._by_id.get(answer.deployment)
            try:
                for event in batch:
                    yield [event]
            except BaseException:
                info.status = 499  # the client left during the replay; it is still a line
                await self._answer_hit(begun, request, caller, info)
                raise
            await self._answer_hit(begun, request, caller, info)
            return

        plan = begun
        texts: list[str] = []
        tools = _Tools()
        finish: str | None = None
        spent = Usage()
        spent_cost = 0
        held: list[Reservation] = []
        last: ProviderError | None = None
        budget_error: BaseException | None = None
        attempt_request = request
        ttft_s: float | None = None
        for index, dep in enumerate(plan.deployments):
            provider = self.providers.get(dep.provider)
            if provider is None:
                continue
            if texts:
                attempt_request = continuation(request, "".join(texts), dep.kind)
            try:
                reservation = await self._reserve(
                    caller, dep, info, self._worst_case(dep, request, info.input_estimate)
                )
            except Exception as exc:
                if not _is_budget_error(exc):
                    raise
                budget_error = exc
                continue
            self.router.started(dep.id)
            t0 = _perf()
            started_text = len(texts)
            usage: Usage | None = None
            produced = False
            events = provider.stream(
                dep, attempt_request, retries=self._retries(provider, index, plan)
            )
            try:
                while True:
                    waited = _perf()
                    try:
                        batch = await anext(events)
                    except StopAsyncIteration:
                        break
                    now = _perf()
                    info.upstream_s += now - waited
                    for event in batch:
                        if event.text:
                            texts.append(event.text)
                        if event.tool_calls:
                            tools.add(event.tool_calls)
                        if event.finish_reason:
                            finish = event.finish_reason
                        if event.usage is not None:
                            usage = event.usage
                    if not produced:
                        produced = True
                        info.deployment = dep
                        info.deployments.append(dep.id)
                        if info.first_byte is None:
                            info.first_byte = now
                            ttft_s = now - info.started
                    yield batch
                if finish is None:
                    raise ProviderError(f"{provider.name}: the stream ended without finishing")
            except ProviderError as exc:
                elapsed = _perf() - t0
                if exc.client_fault and not produced:
                    self.router.abandoned(dep.id)
                else:
                    self.router.finished(
                        dep.id, ok=False, latency_s=elapsed, ttft_s=None, output_tokens=0
                    )
                metrics.ERRORS.inc((dep.id, str(exc.status or 0), "ERR_UPSTREAM"))
                log.info("request %s: %s", info.request_id, exc.message)
                if not produced:
                    await self.ledger.release(reservation)
                    if exc.client_fault and not texts:
                        error: GatewayError = InvalidRequest(exc.message, status=exc.status or 400)
                        await self._record_failure(request, caller, info, error)
                        raise error from None
                    last = exc
                    info.fallbacks += 1
                    continue
                # A break mid-way: what was produced is spent (estimated: no usage came).
                part = self._estimate(dep, info.input_estimate, "".join(texts[started_text:]))
                spent = _add_usage(spent, part)
                spent_cost += _cost(dep, part, elapsed)
                held.append(reservation)
                last = exc
                finish = None
                if not self._recovery or tools.calls or index == len(plan.deployments) - 1:
                    break
                info.recovered = True
                info.fallbacks += 1
                continue
            except BaseException:
                # The client went away (or the task was cancelled): the upstream call is
                # closed below, and what it produced so far is recorded.
                self.router.abandoned(dep.id)
                part = usage or self._estimate(
                    dep, info.input_estimate, "".join(texts[started_text:])
                )
                info.usage = _add_usage(spent, part)
                info.cost = spent_cost + _cost(dep, part, _perf() - t0)
                info.status = 499
                try:
                    await self._settle(reservation, request, caller, info, ttft_s=ttft_s)
                    for r in held:
                        await self.ledger.release(r)
                finally:
                    await events.aclose()
                raise
            finally:
                await events.aclose()
            # The attempt finished the answer.
            elapsed = _perf() - t0
            if usage is None:
                usage = self._estimate(
                    dep,
                    info.input_estimate,
                    "".join(texts[started_text:])
                    + "".join(c["function"]["arguments"] for c in tools.calls.values()),
                )
            self.router.finished(
                dep.id,
                ok=True,
                latency_s=elapsed,
                ttft_s=(info.first_byte - t0) if info.first_byte and info.first_byte > t0 else None,
                output_tokens=usage.output_tokens,
            )
            info.usage = _add_usage(spent, usage)
            info.cost = spent_cost + _cost(dep, usage, elapsed)
            await self._settle(reservation, request, caller, info, ttft_s=ttft_s)
            for r in held:
                await self.ledger.release(r)
            if self._caching and request.cache_control != "no-store":
                answer = ChatAnswer(
                    content="".join(texts),
                    finish_reason=finish or "stop",
                    tool_calls=tools.done(),
                    usage=info.usage,
                    model=dep.model,
                    deployment=dep.id,
                    cost=info.cost,
                )
                await self.cache.store(request, caller, answer)
            return

        # Nobody finished the answer.
        if budget_error is not None and last is None:
            error = to_gateway_error(budget_error)
        elif texts:
            error = ProviderUnavailable(
                "the stream broke off and could not be continued"
                + ("" if self._recovery else " (server.stream_recovery is off)"),
                status=502,
            )
        else:
            error = _unavailable(last, request.model)
        info.status = error.status
        if held:
            info.usage = spent
            info.cost = spent_cost
            metrics.ERRORS.inc((info.deployment_id, str(error.status), error.code))
            await self._settle(held[0], request, caller, info, ttft_s=ttft_s)
            for r in held[1:]:
                await self.ledger.release(r)
        else:
            await self._record_failure(request, caller, info, error)
        raise error
