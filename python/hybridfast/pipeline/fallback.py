"""The one fallback loop over a route plan, for every endpoint.

For each deployment in the plan's order, the endpoint opens one `DeploymentAttempt` (budget
hold, router start) and runs its call inside it, handing on what the call produces (stream
batches for chat, one result for embeddings). The loop decides what a failure means:

- the hold was refused (over budget, the deployment's queue full): try the next deployment;
- the request itself was refused (a 4xx from the upstream, or from the adapter) before
  anything was produced: for chat no other deployment will like it better, so it ends the
  request; an endpoint may instead try the others (`refusal_ends`);
- anything else (an upstream error, a timeout, unusable data): the next deployment, unless
  output already reached the client and the endpoint cannot continue it (`can_continue`).

Chat (`pipeline/chat.py`) and embeddings (`pipeline/embeddings.py`) are `Endpoint`s; a future
endpoint is one more. A whole (not streamed) chat answer goes through `fallback_call`: the same
loop, with the same rules (`went_past`), awaited instead of iterated.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Awaitable, Sequence
from typing import Any, Protocol, TypeVar

from hybridfast.errors import (
    BudgetExceeded,
    GatewayError,
    InvalidRequest,
    QueueFull,
    to_gateway_error,
)
from hybridfast.pipeline.attempt import DeploymentAttempt, outcome_of
from hybridfast.pipeline.context import RequestContext
from hybridfast.pipeline.cost import BadUsage
from hybridfast.providers.base import ProviderError
from hybridfast.types import Deployment

log = logging.getLogger("hybridfast.pipeline")

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Failures:
    """What went wrong on the way through the plan (for the final error)."""

    __slots__ = ("last", "over_budget", "reasons", "refusals")

    def __init__(self) -> None:
        self.last: ProviderError | None = None  # the last upstream failure
        self.over_budget: GatewayError | None = None  # a refused hold or a full queue
        self.refusals: list[GatewayError] = []  # 4xx answers the loop went past
        self.reasons: list[str] = []  # "<deployment>: <why>" for each failed attempt


class Endpoint(Protocol[T_co]):
    """What one kind of request does on one deployment."""

    def attempt(self, deployment: Deployment, index: int, count: int) -> DeploymentAttempt | None:
        """The attempt on `deployment` (None: it cannot be called here; skip it)."""
        ...

    def run(self, attempt: DeploymentAttempt) -> AsyncGenerator[T_co, None]:
        """The call inside the attempt: what it produces, in order."""
        ...

    def refusal_ends(self) -> bool:
        """Whether a refusal of the request itself ends it (else the others are tried)."""
        ...

    def can_continue(self, is_last: bool) -> bool:
        """After a break mid-way: whether the next deployment may continue the answer."""
        ...

    def nobody_answered(self, failures: Failures) -> GatewayError:
        """The error when no deployment answered."""
        ...


class OneCall(Protocol[T_co]):
    """An `Endpoint` whose call produces one result, awaited (`fallback_call`)."""

    def attempt(
        self, deployment: Deployment, index: int, count: int
    ) -> DeploymentAttempt | None: ...

    def call(self, attempt: DeploymentAttempt) -> Awaitable[T_co]:
        """The call inside the attempt: its one result."""
        ...

    def refusal_ends(self) -> bool: ...

    def can_continue(self, is_last: bool) -> bool: ...

    def nobody_answered(self, failures: Failures) -> GatewayError: ...


async def fallback(
    ctx: RequestContext, deployments: Sequence[Deployment], endpoint: Endpoint[T]
) -> AsyncGenerator[T, None]:
    """The one fallback loop (see the module docstring)."""
    failures = Failures()
    count = len(deployments)
    for index, dep in enumerate(deployments):
        attempt = endpoint.attempt(dep, index, count)
        if attempt is None:
            continue
        try:
            async with attempt:
                run = endpoint.run(attempt)
                try:
                    async for item in run:
                        yield item
                finally:
                    await run.aclose()
            return
        except Exception as exc:
            if not went_past(ctx, endpoint, failures, attempt, exc, index == count - 1):
                break
    raise endpoint.nobody_answered(failures)


async def fallback_call(
    ctx: RequestContext, deployments: Sequence[Deployment], endpoint: OneCall[T]
) -> T:
    """The same loop for a call that produces one result (a whole chat answer): awaited,
    not iterated, so a whole answer pays for no async generator on its way through."""
    failures = Failures()
    count = len(deployments)
    for index, dep in enumerate(deployments):
        attempt = endpoint.attempt(dep, index, count)
        if attempt is None:
            continue
        try:
            async with attempt:
                return await endpoint.call(attempt)
        except Exception as exc:
            if not went_past(ctx, endpoint, failures, attempt, exc, index == count - 1):
                break
    raise endpoint.nobody_answered(failures)


def went_past(
    ctx: RequestContext,
    endpoint: Endpoint[Any] | OneCall[Any],
    failures: Failures,
    attempt: DeploymentAttempt,
    exc: Exception,
    is_last: bool,
) -> bool:
    """What a failed attempt means (the module docstring's rules): raises the client's error
    when it ends the request, returns False when the answer broke off and cannot be
    continued, True when the next deployment is tried."""
    dep = attempt.deployment
    if attempt.reservation is None:  # nothing held: nothing was called
        error = to_gateway_error(exc)
        if not isinstance(error, BudgetExceeded | QueueFull):
            raise error from None  # a counter that is down fails closed
        failures.over_budget = error  # over budget, or its queue is full: the next
        return True
    if outcome_of(exc) == "refused" and not attempt.produced:
        if endpoint.refusal_ends():
            raise refusal(exc) from None  # the request's fault, wherever it goes
        failures.refusals.append(refusal(exc))
    failures.last = as_provider_error(exc, dep)
    failures.reasons.append(f"{dep.id}: {failures.last.message}")
    if attempt.produced and not endpoint.can_continue(is_last):
        return False  # a break mid-way that nobody can continue
    ctx.recovered = ctx.recovered or attempt.produced
    ctx.fallbacks += 1
    return True


def refusal(exc: Exception) -> GatewayError:
    """A refused request as the client's error: the upstream's 4xx keeps its status."""
    if isinstance(exc, ProviderError):
        return InvalidRequest(exc.message, status=exc.status or 400)
    return to_gateway_error(exc)


def as_provider_error(exc: Exception, dep: Deployment) -> ProviderError:
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, GatewayError):
        return ProviderError(exc.message, status=exc.status)
    if not isinstance(exc, BadUsage):
        log.warning("%s: the answer could not be used", dep.id, exc_info=True)
    return ProviderError(f"{dep.id}: the upstream's answer could not be used ({exc})")
