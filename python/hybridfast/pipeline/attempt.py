"""The one attempt mechanism, and the one ledger line per request.

`DeploymentAttempt` is an async context manager around one call to one deployment. Entering
holds the budget (the worst case) and tells the router a call started; leaving — however it
leaves: an answer, an upstream error, bad data from the upstream, the client going away —
tells the router the verdict (or that there is none), releases or keeps the hold, counts the
error, and runs the attempt hooks. Chat, streams and embeddings all call deployments through
it, so no exit path can leave a hold reserved or an in-flight slot raised.

`RequestScope` is the same for a whole request: whatever way the request ends, it records
what the client is told on the context (status, error), writes the request's one ledger line
(`RequestBooks`: one hold settled with the whole cost, the others released), and runs the
`after_answer` hooks.

    async with RequestScope(parts, ctx, request) as scope:
        ...validate, route (scope.books.on_books = True once routed)...
        async with DeploymentAttempt(parts, ctx, scope.books, deployment, index, worst) as a:
            ... call the upstream; a.waited(s), a.output_started(now), a.done(usage)
        scope.answer = answer
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import TracebackType

from hybridfast import metrics
from hybridfast._core import HybridfastError
from hybridfast.errors import GatewayError, to_gateway_error
from hybridfast.pipeline.admission import Admission
from hybridfast.pipeline.context import RequestContext
from hybridfast.pipeline.cost import BadUsage, add_usage, charge, checked_usage
from hybridfast.pipeline.hooks import (
    Attempt,
    AttemptOutcome,
    Hooks,
    PipelineAnswer,
    PipelineRequest,
)
from hybridfast.providers.base import ProviderError
from hybridfast.types import Deployment, Ledger, LedgerRecord, Reservation, Router, Usage

log = logging.getLogger("hybridfast.pipeline")
_perf = time.perf_counter


@dataclass(slots=True)
class Parts:
    """What an attempt talks to (the gateway's router, ledger and hooks)."""

    router: Router
    ledger: Ledger
    hooks: Hooks
    # Waiting for a free slot at deployments with max_concurrency (None: no queueing).
    admission: Admission | None = None
    queue_timeout_s: float = 30.0
    default_priority: int = 0


def outcome_of(exc: BaseException) -> AttemptOutcome:
    """How an attempt that raised `exc` ended, for the router, the books and the hooks."""
    if isinstance(exc, ProviderError):
        return "refused" if exc.client_fault else "failed"
    if isinstance(exc, GatewayError) and 400 <= exc.status < 500:
        return "refused"  # the request cannot be sent this way (an adapter said so)
    if isinstance(exc, asyncio.CancelledError | GeneratorExit | KeyboardInterrupt):
        return "cancelled"
    return "failed"  # bad upstream data (usage, shapes) or an adapter bug: try the next one


class RequestBooks:
    """The holds and spending of one request, and its one ledger line."""

    __slots__ = ("ctx", "held", "ledger", "on_books", "spent", "spent_cost")

    def __init__(self, ledger: Ledger, ctx: RequestContext) -> None:
        self.ledger = ledger
        self.ctx = ctx
        self.held: list[Reservation] = []  # holds of attempts that spent something
        self.spent = Usage()
        self.spent_cost = 0
        # False until the request reached routing: a request refused before it (bad input, a
        # hook's refusal) changes nothing, not even the ledger.
        self.on_books = False

    def keep(self, reservation: Reservation, usage: Usage, cost: int) -> None:
        """An attempt spent `cost`: its hold is settled (or released) with the request."""
        self.held.append(reservation)
        self.spent = add_usage(self.spent, usage)
        self.spent_cost += cost

    async def close(self) -> None:
        """Writes the request's line (status, usage and cost from the context) against the
        first hold, and releases the others. A cache hit or a failure with nothing held
        settles without a hold: no round trip to reserve zero."""
        if not self.on_books:
            for reservation in self.held:
                await self.ledger.release(reservation)
            return
        ctx = self.ctx
        if self.held:
            ctx.usage, ctx.cost = self.spent, self.spent_cost
        ctx.ended = _perf()
        dep = ctx.deployment
        record = LedgerRecord(
            request_id=ctx.request_id,
            caller=ctx.caller,
            route=ctx.route,
            deployment=dep.id if dep is not None else None,
            provider=dep.provider if dep is not None else None,
            model=dep.model if dep is not None else None,
            usage=ctx.usage,
            cost=ctx.cost,
            latency_ms=(ctx.ended - ctx.started) * 1000,
            ttft_ms=None if ctx.ttft_s is None else ctx.ttft_s * 1000,
            status=ctx.status,
            cache=ctx.cache,
            fallbacks=ctx.fallbacks,
            saved_cost=ctx.saved_cost,
            parent_id=ctx.parent_id,
        )
        first = self.held[0] if self.held else Reservation(request_id=ctx.request_id, amount=0)
        ctx.marks["settle_start"] = ctx.ended
        try:
            await self.ledger.settle(first, record)
            ctx.marks["settle_end"] = _perf()
        finally:
            for reservation in self.held[1:]:
                await self.ledger.release(reservation)


class RequestScope:
    """One request from its admission to its last byte (see the module docstring)."""

    __slots__ = ("answer", "books", "ctx", "parts", "request")

    def __init__(
        self,
        parts: Parts,
        ctx: RequestContext,
        request: PipelineRequest,
    ) -> None:
        self.parts = parts
        self.ctx = ctx
        self.request = request  # as the hooks leave it
        self.answer: PipelineAnswer | None = None
        self.books = RequestBooks(parts.ledger, ctx)

    async def __aenter__(self) -> RequestScope:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        error = told(self.ctx, exc) if exc is not None else None
        try:
            await self.books.close()
        finally:
            if self.parts.hooks.has("after_answer"):
                await self.parts.hooks.run_after_answer(self.ctx, self.request, self.answer)
        if error is not None and error is not exc:
            raise error from None  # a core error, or a bug: the client gets its GatewayError


def told(ctx: RequestContext, exc: BaseException) -> GatewayError | None:
    """Puts what the client is told about `exc` on the context (status, error); returns the
    `GatewayError` to raise (None: the client went away, there is nobody to tell)."""
    if not isinstance(exc, Exception) or isinstance(exc, asyncio.CancelledError):
        ctx.status = 499  # the client went away (GeneratorExit, cancellation)
        return None
    if not isinstance(exc, HybridfastError):
        log.error("request %s failed", ctx.request_id, exc_info=exc)
    error = to_gateway_error(exc)
    ctx.error = error
    ctx.status = error.status
    metrics.ERRORS.inc((ctx.deployment_id, str(error.status), error.code))
    return error


class DeploymentAttempt:
    """One call to one deployment (see the module docstring). The caller reports progress:
    `waited(seconds)` for time spent waiting on the upstream, `output_started()` at the first
    byte of output, `done(usage, output_text)` when the answer is complete, and
    `partial_usage` for what a cut-off call produced."""

    __slots__ = (
        "books",
        "ctx",
        "deployment",
        "info",
        "partial_usage",
        "parts",
        "produced",
        "reservation",
        "slot",
        "usage",
        "worst_case",
    )

    def __init__(
        self,
        parts: Parts,
        ctx: RequestContext,
        books: RequestBooks,
        deployment: Deployment,
        index: int,
        worst_case: int,
    ) -> None:
        self.parts = parts
        self.ctx = ctx
        self.books = books
        self.deployment = deployment
        self.worst_case = worst_case
        self.info = Attempt(deployment=deployment, index=index)
        self.reservation: Reservation | None = None
        self.produced = False  # output reached the client: this attempt cannot be undone
        self.usage: Usage | None = None  # set by done()
        # What a cut-off call is charged for (called only then: counting tokens costs).
        self.partial_usage: Callable[[], Usage] | None = None

    async def __aenter__(self) -> DeploymentAttempt:
        # BudgetExceeded propagates from here: nothing is held, nothing started.
        self.reservation = await self.parts.ledger.reserve(
            self.ctx.caller, self.deployment, self.ctx.request_id, self.worst_case
        )
        self.parts.router.started(self.deployment.id)
        self.slot: AbstractAsyncContextManager[float] | None = None
        admission = self.parts.admission
        if admission is not None and admission.limited(self.deployment.id):
            await self._wait_for_a_slot(admission)
        started = self.info.started = _perf()
        marks = self.ctx.marks
        if "attempt_start" not in marks:
            marks["attempt_start"] = started  # the first attempt's: ends the queue time
        if self.parts.hooks.has("attempt_start"):
            await self.parts.hooks.run_attempt("attempt_start", self.ctx, self.info)
        return self

    async def _wait_for_a_slot(self, admission: Admission) -> None:
        """Waits its turn at a deployment at its concurrency limit (queue.* in config). A full
        queue or a deadline leaves nothing held: the next deployment is tried."""
        ctx, parts = self.ctx, self.parts
        caller = ctx.caller
        slot = admission.slot(
            self.deployment.id,
            tenant=caller.team or caller.key_name or caller.user or "",
            priority=int(ctx.state.get("priority", parts.default_priority)),
            timeout_s=parts.queue_timeout_s,
        )
        try:
            waited = await slot.__aenter__()
        except BaseException:
            parts.router.abandoned(self.deployment.id)
            assert self.reservation is not None
            await parts.ledger.release(self.reservation)
            self.reservation = None  # nothing held: the fallback loop moves on
            raise
        self.slot = slot
        ctx.queue_s += waited

    def waited(self, seconds: float) -> None:
        self.ctx.upstream_s += seconds

    def output_started(self, now: float) -> None:
        if self.produced:
            return
        self.produced = True
        ctx = self.ctx
        ctx.deployment = self.deployment
        ctx.deployments.append(self.deployment.id)
        if ctx.first_byte is None:
            ctx.first_byte = now

    def done(self, usage: Usage) -> None:
        """The answer is complete; raises `BadUsage` when its counts cannot be billed (the
        attempt then fails like any upstream error)."""
        self.usage = checked_usage(usage)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        info, dep, router = self.info, self.deployment, self.parts.router
        info.ended = _perf()
        elapsed = info.ended - info.started
        if exc is None and self.usage is None:
            exc = BadUsage("the call ended without an answer")  # a caller bug; fail safe
        if exc is None:
            assert self.usage is not None
            info.outcome, info.usage = "ok", self.usage
            info.cost = charge(dep, self.usage, elapsed)
            router.finished(
                dep.id,
                ok=True,
                latency_s=elapsed,
                ttft_s=self._ttft(),
                output_tokens=self.usage.output_tokens,
            )
        else:
            info.outcome = outcome_of(exc)
            info.error = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            if isinstance(exc, ProviderError):
                info.upstream_status = exc.status
            self._verdict(info.outcome, elapsed)
            if self.produced and self.partial_usage is not None:
                info.usage = self.partial_usage()
                info.cost = charge(dep, info.usage, elapsed)
            if info.outcome != "cancelled":
                metrics.ERRORS.inc((dep.id, str(info.upstream_status or 0), "ERR_UPSTREAM"))
                log.info("request %s: %s: %s", self.ctx.request_id, dep.id, info.error)
        assert self.reservation is not None
        if info.outcome == "ok" or self.produced:
            self.books.keep(self.reservation, info.usage or Usage(), info.cost)
        else:
            await self.parts.ledger.release(self.reservation)
        if self.slot is not None:
            await self.slot.__aexit__(None, None, None)  # the next waiter's turn
        if self.parts.hooks.has("attempt_end"):
            await self.parts.hooks.run_attempt("attempt_end", self.ctx, info)

    def _verdict(self, outcome: AttemptOutcome, elapsed: float) -> None:
        """Failures of the deployment count against it; a refused request or a client that
        left says nothing about it and only stops counting as in flight."""
        dep_id = self.deployment.id
        if outcome == "failed" or (outcome == "refused" and self.produced):
            self.parts.router.finished(
                dep_id, ok=False, latency_s=elapsed, ttft_s=None, output_tokens=0
            )
        else:
            self.parts.router.abandoned(dep_id)

    def _ttft(self) -> float | None:
        first = self.ctx.first_byte
        if not self.ctx.stream or first is None or first < self.info.started:
            return None
        return first - self.info.started
