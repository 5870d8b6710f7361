"""Chat on one deployment: the upstream calls (whole and streamed) inside a
`DeploymentAttempt`, and `ChatCall`, the chat endpoint of the fallback loop
(`pipeline/fallback.py`) that `ChatFlow` (`pipeline/chat.py`) drives."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Mapping

from hybridfast.errors import GatewayError, ProviderUnavailable
from hybridfast.pipeline.attempt import DeploymentAttempt, Parts, RequestBooks
from hybridfast.pipeline.context import RequestContext
from hybridfast.pipeline.cost import BadUsage, estimated_usage, worst_case
from hybridfast.pipeline.fallback import Failures
from hybridfast.pipeline.recovery import Assembly, as_batch, continuation
from hybridfast.providers.base import Provider, ProviderError
from hybridfast.types import ChatAnswer, ChatRequest, Deployment, StreamEvent, Usage

log = logging.getLogger("hybridfast.pipeline")
_perf = time.perf_counter


async def call_whole(
    provider: Provider,
    attempt: DeploymentAttempt,
    request: ChatRequest,
    retries: int,
) -> ChatAnswer:
    """One whole-answer upstream call (awaited by `ChatCall.call`, or the one batch of
    `ChatCall._whole` when a whole answer goes through the iterated loop)."""
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

    __slots__ = ("assembly", "books", "count", "ctx", "parts", "providers", "recovery", "request")

    def __init__(
        self,
        parts: Parts,
        providers: Mapping[str, Provider],
        recovery: bool,
        request: ChatRequest,
        ctx: RequestContext,
        books: RequestBooks,
        assembly: Assembly,
    ) -> None:
        self.parts = parts
        self.providers = providers
        self.recovery = recovery  # server.stream_recovery
        self.request = request
        self.ctx = ctx
        self.books = books
        self.assembly = assembly
        self.count = 0

    def attempt(self, deployment: Deployment, index: int, count: int) -> DeploymentAttempt | None:
        if deployment.provider not in self.providers:
            return None
        self.count = count
        worst = worst_case(deployment, self.request, self.ctx.input_estimate)
        return DeploymentAttempt(self.parts, self.ctx, self.books, deployment, index, worst)

    def _call_of(self, attempt: DeploymentAttempt) -> tuple[Provider, ChatRequest, int]:
        dep = attempt.deployment
        provider = self.providers[dep.provider]
        sent = self.assembly.text()
        request = continuation(self.request, sent, dep.kind) if sent else self.request
        # Retry in place only on the last candidate: before it, falling back is faster.
        retries = provider.config.max_retries if attempt.info.index == self.count - 1 else 0
        return provider, request, retries

    def run(self, attempt: DeploymentAttempt) -> AsyncGenerator[list[StreamEvent], None]:
        provider, request, retries = self._call_of(attempt)
        if not request.stream:
            return self._whole(provider, attempt, request, retries)
        return call_stream(provider, attempt, request, retries, self.assembly)

    async def call(self, attempt: DeploymentAttempt) -> None:
        """The call of `fallback_call` (`ChatFlow.complete`): its result is the assembly."""
        provider, request, retries = self._call_of(attempt)
        if not request.stream:
            self.assembly.whole = await call_whole(provider, attempt, request, retries)
            return
        # A before_route hook asked for a stream: collected into the assembly.
        batches = call_stream(provider, attempt, request, retries, self.assembly)
        try:
            async for _ in batches:
                pass
        finally:
            await batches.aclose()

    async def _whole(
        self, provider: Provider, attempt: DeploymentAttempt, request: ChatRequest, retries: int
    ) -> AsyncGenerator[list[StreamEvent], None]:
        """A whole answer as a one-batch stream."""
        self.assembly.whole = await call_whole(provider, attempt, request, retries)
        yield as_batch(self.assembly.whole)

    def refusal_ends(self) -> bool:
        # Refused as the continuation of a broken stream: the request itself was fine.
        return not self.assembly.texts

    def can_continue(self, is_last: bool) -> bool:
        self.assembly.finish = None
        calls = self.assembly.calls
        return self.recovery and not calls and not is_last

    def nobody_answered(self, failures: Failures) -> GatewayError:
        if failures.over_budget is not None and failures.last is None:
            return failures.over_budget
        if self.assembly.texts:
            recovery = self.recovery
            return ProviderUnavailable(
                "the stream broke off and could not be continued"
                + ("" if recovery else " (server.stream_recovery is off)"),
                status=502,
            )
        return unavailable(failures.last, self.ctx.route)


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
