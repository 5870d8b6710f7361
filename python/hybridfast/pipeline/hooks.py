"""Seams: the named points of the request pipeline where behaviour attaches without editing it.

Four seams, in the order a request meets them:

- `before_route(ctx, request) -> request | None` — after the request is parsed and checked,
  before the cache and the router see it. Guardrails, rate limits, prompt templates, queue
  admission. Return a changed request to replace it (a template), `None` to keep it. Raise a
  `GatewayError` with a 4xx status to refuse the request: the client gets that error in its
  protocol's shape (and nothing is held or charged).
- `attempt_start(ctx, attempt)` / `attempt_end(ctx, attempt)` — around each call to one
  deployment (a fallback makes several attempts). Tracing spans, per-upstream logs.
  `attempt.outcome` says how it ended.
- `after_answer(ctx, request, answer)` — once per request, on every ending (answered, failed,
  refused by a hook, cancelled), after the ledger line is written. The request log, callbacks,
  webhooks. `answer` is the `ChatAnswer` (a finished stream, assembled) or `EmbeddingResult`,
  or None when there is none (`ctx.error` / `ctx.status` say why). Queue admission releases
  its slot here.

Every hook is an `async def`. A hook that raises is isolated: the error is logged with the
hook's name, counted in `hybridfast_hook_errors_total{seam,hook}`, and the request goes on as if
the hook were absent — never a 500. The one exception is a deliberate refusal in
`before_route` (a `GatewayError` with a status below 500), which is passed to the client.
Cancellation (`asyncio.CancelledError`) is never swallowed.

    gw = Gateway.from_config("hybridfast.yaml")

    @gw.hooks.before_route
    async def no_secrets(ctx: RequestContext, request: PipelineRequest) -> None:
        if isinstance(request, ChatRequest) and "BEGIN PRIVATE KEY" in str(request.messages):
            raise InvalidRequest("the prompt contains a private key", code="ERR_GUARDRAIL")

    gw.hooks.add("after_answer", log_request, name="request-log", order=10)

Hooks run in `order` (lower first, then registration order). With no hook registered a seam
costs one attribute check.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, TypeVar

from hybridfast import metrics
from hybridfast.errors import GatewayError
from hybridfast.pipeline.context import RequestContext
from hybridfast.types import (
    ChatAnswer,
    ChatRequest,
    Deployment,
    EmbeddingRequest,
    EmbeddingResult,
    Usage,
)

log = logging.getLogger("hybridfast.hooks")

Seam = Literal["before_route", "attempt_start", "attempt_end", "after_answer"]
SEAMS: tuple[Seam, ...] = ("before_route", "attempt_start", "attempt_end", "after_answer")

# What flows through the pipeline: a chat request (every chat-like protocol: OpenAI chat,
# Anthropic messages, Responses, completions) or an embeddings request.
PipelineRequest: TypeAlias = ChatRequest | EmbeddingRequest
PipelineAnswer: TypeAlias = ChatAnswer | EmbeddingResult

AttemptOutcome = Literal[
    "pending",  # still running (what `attempt_start` hooks see)
    "ok",  # the deployment answered
    "failed",  # the deployment failed (a fallback may follow)
    "refused",  # the upstream refused the request itself as malformed (4xx)
    "over_budget",  # no budget left for this deployment: it was not called
    "cancelled",  # the client went away
]


class Attempt:
    """One call to one deployment, as per-attempt hooks see it."""

    __slots__ = (
        "cost",
        "deployment",
        "ended",
        "error",
        "index",
        "outcome",
        "started",
        "upstream_status",
        "usage",
    )

    def __init__(self, deployment: Deployment, index: int) -> None:
        self.deployment = deployment
        self.index = index  # its position in the route plan (0: the first choice)
        self.started = time.perf_counter()  # perf_counter seconds
        self.ended: float | None = None
        self.outcome: AttemptOutcome = "pending"
        self.upstream_status: int | None = None  # the upstream's HTTP status when it failed
        self.error: str | None = None  # why it failed (no keys: provider messages are scrubbed)
        self.usage: Usage | None = None
        self.cost = 0  # picodollars this attempt cost

    @property
    def duration_s(self) -> float:
        return (self.ended or time.perf_counter()) - self.started


BeforeRoute: TypeAlias = Callable[
    [RequestContext, PipelineRequest], Awaitable[PipelineRequest | None]
]
AttemptHook: TypeAlias = Callable[[RequestContext, Attempt], Awaitable[None]]
AfterAnswer: TypeAlias = Callable[
    [RequestContext, PipelineRequest, PipelineAnswer | None], Awaitable[None]
]
AnyHook: TypeAlias = BeforeRoute | AttemptHook | AfterAnswer
H = TypeVar("H", bound=Callable[..., Awaitable[Any]])


@dataclass(slots=True, frozen=True)
class _Entry:
    name: str
    order: int
    fn: Callable[..., Awaitable[Any]]


HOOK_ERRORS = metrics.Counter(
    "hybridfast_hook_errors",
    "Hooks that raised (isolated: the request went on without them), by seam and hook.",
    ["seam", "hook"],
)


def hook_failures() -> dict[tuple[str, str], int]:
    """A copy of the failure counts, by (seam, hook name)."""
    return {(seam, name): int(n) for (seam, name), n in HOOK_ERRORS.values.items()}


class Hooks:
    """The hooks of one gateway, by seam. `gateway.hooks` is the instance to register on."""

    __slots__ = ("_seams",)

    def __init__(self) -> None:
        self._seams: dict[str, tuple[_Entry, ...]] = dict.fromkeys(SEAMS, ())

    # --- registering -------------------------------------------------------------------

    def add(self, seam: Seam, fn: H, *, name: str | None = None, order: int = 0) -> H:
        """Attaches `fn` (an `async def`) at `seam`; returns it, so it works as a decorator."""
        if seam not in self._seams:
            raise ValueError(f"unknown seam {seam!r}; the seams are {', '.join(SEAMS)}")
        entry = _Entry(name or str(getattr(fn, "__qualname__", repr(fn))), order, fn)
        # Sorted once here, not per request; sorted() is stable: equal orders keep
        # registration order.
        self._seams[seam] = tuple(sorted((*self._seams[seam], entry), key=lambda e: e.order))
        return fn

    def remove(self, seam: Seam, fn: Callable[..., Awaitable[Any]]) -> None:
        # != (not `is not`): a bound method is a new object at each access, equal to the last.
        self._seams[seam] = tuple(e for e in self._seams[seam] if e.fn != fn)

    def switch(
        self, seam: Seam, fn: Callable[..., Awaitable[Any]], on: bool, *, name: str, order: int = 0
    ) -> None:
        """Attaches `fn` while its feature has work to do and detaches it when idle (a
        feature whose settings change at run time: keys with model lists, rate limits).
        Idempotent; an idle feature then costs requests nothing, not even an await."""
        attached = any(e.fn == fn for e in self._seams[seam])
        if on and not attached:
            self.add(seam, fn, name=name, order=order)
        elif not on and attached:
            self.remove(seam, fn)

    def before_route(self, fn: BeforeRoute) -> BeforeRoute:
        return self.add("before_route", fn)

    def attempt_start(self, fn: AttemptHook) -> AttemptHook:
        return self.add("attempt_start", fn)

    def attempt_end(self, fn: AttemptHook) -> AttemptHook:
        return self.add("attempt_end", fn)

    def after_answer(self, fn: AfterAnswer) -> AfterAnswer:
        return self.add("after_answer", fn)

    def names(self, seam: Seam) -> list[str]:
        return [e.name for e in self._seams[seam]]

    def has(self, seam: Seam) -> bool:
        return bool(self._seams[seam])

    # --- running (the pipeline calls these) ---------------------------------------------

    async def run_before_route(
        self, ctx: RequestContext, request: PipelineRequest
    ) -> PipelineRequest:
        """The request as the hooks leave it; a hook's 4xx `GatewayError` propagates."""
        for entry in self._seams["before_route"]:
            try:
                changed = await entry.fn(ctx, request)
            except GatewayError as exc:
                if exc.status < 500:
                    raise  # a deliberate refusal: the client is told
                _failed("before_route", entry, ctx)
                continue
            except Exception:
                _failed("before_route", entry, ctx)
                continue
            if changed is not None:
                request = changed
        return request

    async def run_attempt(self, seam: Seam, ctx: RequestContext, attempt: Attempt) -> None:
        for entry in self._seams[seam]:
            try:
                await entry.fn(ctx, attempt)
            except Exception:
                _failed(seam, entry, ctx)

    async def run_after_answer(
        self, ctx: RequestContext, request: PipelineRequest, answer: PipelineAnswer | None
    ) -> None:
        for entry in self._seams["after_answer"]:
            try:
                await entry.fn(ctx, request, answer)
            except Exception:
                _failed("after_answer", entry, ctx)


def _failed(seam: str, entry: _Entry, ctx: RequestContext) -> None:
    HOOK_ERRORS.inc((seam, entry.name))
    log.warning(
        "request %s: hook %s at %s failed; going on without it",
        ctx.request_id,
        entry.name,
        seam,
        exc_info=True,
    )
