"""The chat pipeline, read top to bottom — every chat-like request (OpenAI chat, Anthropic
messages, Responses, completions; streaming or not) comes through `ChatFlow.events`:

    admit     validate, then the `before_route` hooks (guardrails, rate limits, templates)
    lookup    the response cache (a hit is replayed: as a real stream when one was asked for)
    route     the router's plan: deployments in the order to try them
    attempts  the one fallback loop: for each deployment, one `DeploymentAttempt` (hold →
              call → stream → settle or release); a stream that breaks mid-way is continued
              on the next deployment with the partial answer as an assistant prefix
    store     the finished answer into the cache
    finally   the request's one ledger line, metrics, the `after_answer` hooks

A non-streaming call is a stream of one batch: the same loop, the same attempt. `complete`
collects it into a `ChatAnswer`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass

from hybridfast.errors import (
    BudgetExceeded,
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    NoChatModels,
    ProviderUnavailable,
    to_gateway_error,
)
from hybridfast.pipeline.attempt import DeploymentAttempt, Parts, RequestBooks, RequestScope
from hybridfast.pipeline.coalesce import InFlight
from hybridfast.pipeline.context import RequestContext
from hybridfast.pipeline.cost import (
    MAX_TOKENS_PER_CALL,
    BadUsage,
    estimated_usage,
    input_estimate,
    worst_case,
)
from hybridfast.pipeline.fallback import Failures, fallback
from hybridfast.pipeline.recovery import Assembly, as_batch, continuation, replay_events
from hybridfast.providers.base import Provider, ProviderError
from hybridfast.types import (
    CacheHit,
    CacheTicket,
    ChatAnswer,
    ChatRequest,
    Deployment,
    RequestFeatures,
    ResponseCache,
    RoutePlan,
    StreamEvent,
    Usage,
)

log = logging.getLogger("hybridfast.pipeline")
_perf = time.perf_counter


@dataclass(slots=True)
class ChatSettings:
    caching: bool  # either cache is on: there is something to look up or store
    stream_recovery: bool  # continue a broken stream on the next deployment
    coalesce: bool = False  # identical cacheable requests in flight make one upstream call
    coalesce_wait_s: float = 30.0  # how long a follower waits for its leader


class _Outcome:
    """Where `complete` finds the answer once the events are consumed."""

    __slots__ = ("answer",)

    def __init__(self) -> None:
        self.answer: ChatAnswer | None = None


class ChatFlow:
    """The chat pipeline over one gateway's parts."""

    def __init__(
        self,
        parts: Parts,
        cache: ResponseCache,
        providers: Mapping[str, Provider],
        deployments: Mapping[str, Deployment],
        settings: ChatSettings,
    ) -> None:
        self.parts = parts
        self.cache = cache
        self.providers = providers
        self.deployments = deployments  # by id
        self.settings = settings
        self.in_flight = InFlight()

    async def complete(self, request: ChatRequest, ctx: RequestContext) -> ChatAnswer:
        """A whole answer: the same flow, its one batch collected."""
        outcome = _Outcome()
        events = self.events(request, ctx, outcome)
        try:
            async for _ in events:
                pass
        finally:
            await events.aclose()
        assert outcome.answer is not None
        return outcome.answer

    async def events(
        self, request: ChatRequest, ctx: RequestContext, outcome: _Outcome | None = None
    ) -> AsyncGenerator[list[StreamEvent], None]:
        """The answer as batches of events. The first batch comes once an upstream produced
        a byte (or the cache answered); a failure before it raises a `GatewayError`. When it
        ends, `ctx` holds the exact usage and cost and the ledger line is written."""
        async with RequestScope(self.parts, ctx, request) as scope:
            request = scope.request = await self.admit(request, ctx)
            marks = ctx.marks
            marks["cache_start"] = _perf()
            hit, ticket = await self.lookup(request, ctx)
            key = coalescing_key(ticket) if hit is None and self.settings.coalesce else None
            if key is not None and await self.in_flight.wait(key, self.settings.coalesce_wait_s):
                hit, ticket = await self.lookup(request, ctx)  # the leader's answer, now cached
            marks["cache_end"] = _perf()
            if hit is not None:
                scope.books.on_books = True
                scope.answer = hit.answer
                if outcome is not None:
                    outcome.answer = hit.answer
                for event in replay_events(hit.answer, ctx.stream):
                    yield [event]
                return
            leader = self.in_flight.lead(key) if key is not None else None
            try:
                plan = self.route(request, ctx, scope.books)
                marks["route_end"] = _perf()
                assembly = Assembly()
                attempts = self.attempts(request, ctx, plan, scope.books, assembly)
                try:
                    async for batch in attempts:
                        yield batch
                finally:
                    await attempts.aclose()  # closes the upstream call now, not at GC
                answer = assembly.answer(
                    usage=scope.books.spent,
                    model=ctx.deployment.model if ctx.deployment is not None else "",
                    deployment=ctx.deployment_id,
                    cost=scope.books.spent_cost,
                )
                scope.answer = answer
                if outcome is not None:
                    outcome.answer = answer
                if ticket is not None and request.cache_control != "no-store":
                    await self.cache.store(request, ctx.caller, answer, ticket)
            finally:
                if leader is not None:
                    assert key is not None
                    self.in_flight.finish(key, leader)  # identical requests waiting look again

    # --- the steps, in order ----------------------------------------------------------

    async def admit(self, request: ChatRequest, ctx: RequestContext) -> ChatRequest:
        """validate → before_route hooks; nothing is held or written yet."""
        if not request.messages:
            raise InvalidRequest("`messages` must be a non-empty list")
        if request.max_tokens is not None and request.max_tokens >= MAX_TOKENS_PER_CALL:
            raise InvalidRequest(f"`max_tokens` must be below {MAX_TOKENS_PER_CALL}")
        if self.parts.hooks.has("before_route"):
            changed = await self.parts.hooks.run_before_route(ctx, request)
            if not isinstance(changed, ChatRequest):
                raise TypeError("a before_route hook returned a non-chat request for chat")
            request = changed
        ctx.route = request.model
        ctx.stream = request.stream
        ctx.input_estimate = input_estimate(request)
        return request

    async def lookup(
        self, request: ChatRequest, ctx: RequestContext
    ) -> tuple[CacheHit | None, CacheTicket | None]:
        """The cached answer, if any, and the request's cache ticket (None: caching is off)."""
        if not self.settings.caching:
            ctx.cache = "bypass"
            return None, None
        ticket = self.cache.ticket(request, ctx.caller)
        if request.cache_control != "default":
            ctx.cache = "bypass"
            return None, ticket
        if not ticket.lookup:  # e.g. sampled: decided without a lookup (nor an await)
            self.cache.note_bypass()
            ctx.cache = "bypass"
            return None, ticket
        hit = await self.cache.lookup(request, ctx.caller, ticket)
        if hit is None:
            if not ticket.store:  # e.g. sampled: neither looked up nor kept
                ctx.cache = "bypass"
            return None, ticket
        ctx.cache = hit.kind
        ctx.similarity = hit.similarity
        ctx.deployment = self.deployments.get(hit.answer.deployment)
        ctx.usage = hit.answer.usage
        ctx.saved_cost = hit.answer.cost
        ctx.first_byte = _perf()
        return hit, ticket

    def has_chat_deployment(self) -> bool:
        return any("embeddings" not in d.capabilities for d in self.deployments.values())

    def route(self, request: ChatRequest, ctx: RequestContext, books: RequestBooks) -> RoutePlan:
        features = RequestFeatures(
            request_id=ctx.request_id,
            input_tokens=ctx.input_estimate,
            max_output_tokens=request.max_tokens,
            stream=request.stream,
            needs=needs_of(request),
            tags=ctx.caller.tags,
            budget_remaining=self.parts.ledger.remaining(ctx.caller),
        )
        try:
            plan = self.parts.router.plan(request.model, features, ctx.caller)
        except Exception as exc:
            error = to_gateway_error(exc)
            if isinstance(error, ModelNotFound) and not self.has_chat_deployment():
                # No name could be answered: say how to add a model, not "check the name".
                error = NoChatModels()
            books.on_books = isinstance(error, BudgetExceeded)  # spend policy: on the books
            raise error from None
        books.on_books = True
        ctx.arm = plan.arm
        return plan

    def attempts(
        self,
        request: ChatRequest,
        ctx: RequestContext,
        plan: RoutePlan,
        books: RequestBooks,
        assembly: Assembly,
    ) -> AsyncGenerator[list[StreamEvent], None]:
        """The plan's deployments through the one fallback loop (`pipeline/fallback.py`)."""
        return fallback(ctx, plan.deployments, ChatCall(self, request, ctx, books, assembly))

    async def call(
        self,
        provider: Provider,
        attempt: DeploymentAttempt,
        request: ChatRequest,
        retries: int,
    ) -> ChatAnswer:
        """One whole-answer upstream call (the one batch of a one-batch stream)."""
        dep, ctx = attempt.deployment, attempt.ctx
        t0 = _perf()
        whole = await provider.chat(dep, request, retries=retries)
        now = _perf()
        attempt.waited(now - t0)
        usage = whole.usage
        if usage.estimated:
            text = whole.content + "".join(c["function"]["arguments"] for c in whole.tool_calls)
            usage = estimated_usage(dep, ctx.input_estimate, text)
        # Checked before anything is kept or handed on: bad counts fail this attempt, and
        # the next deployment answers.
        attempt.done(usage)
        attempt.output_started(now)
        return whole

    async def call_stream(
        self,
        provider: Provider,
        attempt: DeploymentAttempt,
        request: ChatRequest,
        retries: int,
        assembly: Assembly,
    ) -> AsyncGenerator[list[StreamEvent], None]:
        """One streamed upstream call as batches; reports progress and the final usage to
        `attempt`."""
        dep, ctx = attempt.deployment, attempt.ctx
        since = len(assembly.texts)
        events = provider.stream(dep, request, retries=retries)
        reported: Usage | None = None

        def partial() -> Usage:
            # Only when the call is cut short: what it produced, as reported or counted.
            return reported or estimated_usage(dep, ctx.input_estimate, assembly.output_text(since))

        attempt.partial_usage = partial
        add = assembly.add
        try:
            while True:
                waited = _perf()
                try:
                    batch = await anext(events)
                except StopAsyncIteration:
                    break
                now = _perf()
                ctx.upstream_s += now - waited
                reported = add(batch) or reported
                if not attempt.produced:
                    attempt.output_started(now)
                yield batch
            if assembly.finish is None:
                raise ProviderError(f"{provider.name}: the stream ended without finishing")
        finally:
            await events.aclose()
        if reported is not None:
            try:
                attempt.done(reported)
                return
            except BadUsage as exc:
                # The client has the whole answer already: bill the gateway's own count.
                log.warning("request %s: %s: %s; billing an estimate", ctx.request_id, dep.id, exc)
        attempt.done(estimated_usage(dep, ctx.input_estimate, assembly.output_text(since)))


class ChatCall:
    """Chat on one deployment after another: the chat `Endpoint` of the fallback loop."""

    __slots__ = ("assembly", "books", "count", "ctx", "flow", "request")

    def __init__(
        self,
        flow: ChatFlow,
        request: ChatRequest,
        ctx: RequestContext,
        books: RequestBooks,
        assembly: Assembly,
    ) -> None:
        self.flow = flow
        self.request = request
        self.ctx = ctx
        self.books = books
        self.assembly = assembly
        self.count = 0

    def attempt(self, deployment: Deployment, index: int, count: int) -> DeploymentAttempt | None:
        if deployment.provider not in self.flow.providers:
            return None
        self.count = count
        worst = worst_case(deployment, self.request, self.ctx.input_estimate)
        return DeploymentAttempt(self.flow.parts, self.ctx, self.books, deployment, index, worst)

    def run(self, attempt: DeploymentAttempt) -> AsyncGenerator[list[StreamEvent], None]:
        dep = attempt.deployment
        provider = self.flow.providers[dep.provider]
        sent = self.assembly.text()
        request = continuation(self.request, sent, dep.kind) if sent else self.request
        # Retry in place only on the last candidate: before it, falling back is faster.
        retries = provider.config.max_retries if attempt.info.index == self.count - 1 else 0
        if not request.stream:
            return self._whole(provider, attempt, request, retries)
        return self.flow.call_stream(provider, attempt, request, retries, self.assembly)

    async def _whole(
        self, provider: Provider, attempt: DeploymentAttempt, request: ChatRequest, retries: int
    ) -> AsyncGenerator[list[StreamEvent], None]:
        """A whole answer as a one-batch stream."""
        self.assembly.whole = await self.flow.call(provider, attempt, request, retries)
        yield as_batch(self.assembly.whole)

    def refusal_ends(self) -> bool:
        # Refused as the continuation of a broken stream: the request itself was fine.
        return not self.assembly.texts

    def can_continue(self, is_last: bool) -> bool:
        self.assembly.finish = None
        calls = self.assembly.calls
        return self.flow.settings.stream_recovery and not calls and not is_last

    def nobody_answered(self, failures: Failures) -> GatewayError:
        if failures.over_budget is not None and failures.last is None:
            return failures.over_budget
        if self.assembly.texts:
            recovery = self.flow.settings.stream_recovery
            return ProviderUnavailable(
                "the stream broke off and could not be continued"
                + ("" if recovery else " (server.stream_recovery is off)"),
                status=502,
            )
        return unavailable(failures.last, self.ctx.route)


# --- helpers -----------------------------------------------------------------------------


def coalescing_key(ticket: CacheTicket | None) -> bytes | None:
    """The exact cache key of a request the cache may answer and keep; None otherwise."""
    if ticket is None or not (ticket.lookup and ticket.store):
        return None
    key: bytes | None = getattr(ticket, "key", None)
    return key


def needs_of(request: ChatRequest) -> frozenset[str]:
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


def unavailable(last: ProviderError | None, route: str) -> ProviderUnavailable:
    """The error of a request no deployment answered, with the last upstream's status."""
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
