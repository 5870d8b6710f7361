"""The chat pipeline, read top to bottom — every chat-like request (OpenAI chat, Anthropic
messages, Responses, completions) comes through `ChatFlow.events` (streamed) or
`ChatFlow.complete` (whole), the same steps:

    admit     validate, then the `before_route` hooks (guardrails, rate limits, templates)
    lookup    the response cache (a hit is replayed: as a real stream when one was asked for)
    route     the router's plan: deployments in the order to try them
    attempts  the one fallback loop: for each deployment, one `DeploymentAttempt` (hold →
              call → stream → settle or release); a stream that breaks mid-way is continued
              on the next deployment with the partial answer as an assistant prefix
    store     the finished answer into the cache
    finally   the request's one ledger line, metrics, the `after_answer` hooks

A whole answer takes the same steps, the same fallback rules and the same attempt; its one
upstream call is awaited through `fallback_call` instead of iterated as a one-batch stream, so
it costs no async generator. The calls on one deployment are in `pipeline/chat_call.py`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass

from hybridfast.errors import (
    BudgetExceeded,
    InvalidRequest,
    ModelNotFound,
    NoChatModels,
    to_gateway_error,
)
from hybridfast.pipeline.attempt import Parts, RequestBooks, RequestScope
from hybridfast.pipeline.chat_call import ChatCall
from hybridfast.pipeline.coalesce import InFlight
from hybridfast.pipeline.context import RequestContext
from hybridfast.pipeline.cost import (
    MAX_TOKENS_PER_CALL,
    input_estimate,
)
from hybridfast.pipeline.fallback import fallback, fallback_call
from hybridfast.pipeline.recovery import Assembly, replay_events
from hybridfast.providers.base import Provider
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
)

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
        # Optional in the cache protocol (`types.ResponseCache`).
        self._note_bypass: Callable[[], None] | None = getattr(cache, "note_bypass", None)

    async def complete(self, request: ChatRequest, ctx: RequestContext) -> ChatAnswer:
        """A whole answer: the steps of `events`, the one call awaited rather than iterated
        (no async generator on its way). A streamed request is collected from `events`."""
        if request.stream:
            return await self._collected(request, ctx)
        async with RequestScope(self.parts, ctx, request) as scope:
            request = scope.request = await self.admit(request, ctx)
            hit, ticket, key = await self.cached(request, ctx)
            if hit is not None:
                scope.books.on_books = True
                scope.answer = hit.answer
                return hit.answer
            leader = self.in_flight.lead(key) if key is not None else None
            try:
                plan = self.route(request, ctx, scope.books)
                ctx.marks["route_end"] = _perf()
                assembly = Assembly()
                call = self._call(request, ctx, scope.books, assembly)
                await fallback_call(ctx, plan.deployments, call)
                answer = scope.answer = self.assembled(ctx, scope.books, assembly)
                await self.keep(request, ctx, answer, ticket)
                return answer
            finally:
                if leader is not None:
                    assert key is not None
                    self.in_flight.finish(key, leader)  # identical requests waiting look again

    async def _collected(self, request: ChatRequest, ctx: RequestContext) -> ChatAnswer:
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
            hit, ticket, key = await self.cached(request, ctx)
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
                ctx.marks["route_end"] = _perf()
                assembly = Assembly()
                attempts = self.attempts(request, ctx, plan, scope.books, assembly)
                try:
                    async for batch in attempts:
                        yield batch
                finally:
                    await attempts.aclose()  # closes the upstream call now, not at GC
                answer = scope.answer = self.assembled(ctx, scope.books, assembly)
                if outcome is not None:
                    outcome.answer = answer
                await self.keep(request, ctx, answer, ticket)
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

    async def cached(
        self, request: ChatRequest, ctx: RequestContext
    ) -> tuple[CacheHit | None, CacheTicket | None, bytes | None]:
        """`lookup`, and when an identical request is already being answered (coalescing),
        a second lookup once it is: the hit, the ticket and the coalescing key."""
        marks = ctx.marks
        marks["cache_start"] = _perf()
        hit, ticket = await self.lookup(request, ctx)
        key = coalescing_key(ticket) if hit is None and self.settings.coalesce else None
        if key is not None and await self.in_flight.wait(key, self.settings.coalesce_wait_s):
            hit, ticket = await self.lookup(request, ctx)  # the leader's answer, now cached
        marks["cache_end"] = _perf()
        return hit, ticket, key

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
        if not ticket.lookup and self._note_bypass is not None:
            self._note_bypass()  # e.g. sampled: decided without a lookup (nor an await)
            ctx.cache = "bypass"
            return None, ticket
        hit = await self.cache.lookup(request, ctx.caller, ticket)
        if hit is None:
            # One the cache would not keep either (e.g. sampled) is a bypass, not a miss.
            ctx.cache = "miss" if ticket.store else "bypass"
            return None, ticket
        ctx.cache = hit.kind
        ctx.similarity = hit.similarity
        ctx.deployment = self.deployments.get(hit.answer.deployment)
        ctx.usage = hit.answer.usage
        ctx.saved_cost = hit.answer.cost
        ctx.first_byte = _perf()
        return hit, ticket

    def assembled(self, ctx: RequestContext, books: RequestBooks, assembly: Assembly) -> ChatAnswer:
        """The answer the attempts produced, with the request's whole usage and cost."""
        return assembly.answer(
            usage=books.spent,
            model=ctx.deployment.model if ctx.deployment is not None else "",
            deployment=ctx.deployment_id,
            cost=books.spent_cost,
        )

    async def keep(
        self,
        request: ChatRequest,
        ctx: RequestContext,
        answer: ChatAnswer,
        ticket: CacheTicket | None,
    ) -> None:
        """The finished answer into the cache, when the request may be kept."""
        if ticket is not None and ticket.store and request.cache_control != "no-store":
            await self.cache.store(request, ctx.caller, answer, ticket)

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
        return fallback(ctx, plan.deployments, self._call(request, ctx, books, assembly))

    def _call(
        self, request: ChatRequest, ctx: RequestContext, books: RequestBooks, assembly: Assembly
    ) -> ChatCall:
        recovery = self.settings.stream_recovery
        return ChatCall(self.parts, self.providers, recovery, request, ctx, books, assembly)


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
