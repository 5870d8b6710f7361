"""Attaches rate limits to a gateway: `install(gateway)` (listed in `server.features`).

`before_route` admits the request under every scope it falls under or refuses it with a 429;
`after_answer` frees its concurrent slot and settles its token charge with the usage the
upstream reported (a request that failed before any upstream answered is settled at 0).
Neither is attached while no limit is configured.
"""

from __future__ import annotations

import weakref

from hybridfast.config import Config
from hybridfast.pipeline.context import RequestContext
from hybridfast.pipeline.gateway import Gateway
from hybridfast.pipeline.hooks import PipelineAnswer, PipelineRequest
from hybridfast.security.ratelimit import (
    STATE_KEY,
    Backend,
    Hold,
    LocalBackend,
    RateLimits,
    usage_tokens,
)
from hybridfast.security.ratelimit_redis import RedisBackend

_INSTALLED: weakref.WeakKeyDictionary[Gateway, RateLimits] = weakref.WeakKeyDictionary()


def make_backend(config: Config) -> Backend:
    if config.limits.backend == "redis":
        return RedisBackend(config.limits)
    return LocalBackend()


def limits_of(gateway: Gateway) -> RateLimits | None:
    """The rate limits installed on a gateway (for keys created at run time)."""
    return _INSTALLED.get(gateway)


def install(gateway: Gateway) -> None:
    config = gateway.config
    limits = RateLimits(config, make_backend(config))
    _INSTALLED[gateway] = limits

    async def admit(ctx: RequestContext, request: PipelineRequest) -> None:
        hold, headers = await limits.admit(ctx.caller, request)
        if hold is not None:
            ctx.state[STATE_KEY] = hold
            ctx.response_headers.update(headers)

    async def settle(
        ctx: RequestContext, request: PipelineRequest, answer: PipelineAnswer | None
    ) -> None:
        hold = ctx.state.pop(STATE_KEY, None)
        if isinstance(hold, Hold):
            await limits.release(hold, usage_tokens(ctx.usage))

    def switch() -> None:
        # Attached only while some limit is configured (keys created at run time may add
        # the first): with none, requests pay nothing for rate limiting. Once attached,
        # `settle` stays, so a hold admitted just before the last limit went is released.
        on = bool(limits.configured)
        # Early (order 10): a refused request should cost nothing further down the line.
        gateway.hooks.switch("before_route", admit, on, name="ratelimit", order=10)
        if on:
            gateway.hooks.switch("after_answer", settle, True, name="ratelimit", order=-10)

    limits.on_change = switch
    switch()
