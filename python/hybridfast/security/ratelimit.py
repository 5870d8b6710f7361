"""Rate limits: requests and tokens per minute and concurrent requests per key, user, team,
model and route, as a `before_route` / `after_answer` hook pair.

The arithmetic lives in the core (`hybridfast._core.RateLimiter`: exact integer GCRA, all the
request's scopes admitted together or not at all). With `limits.backend: redis` several
instances share the counters: one Lua script does the same arithmetic atomically in Redis,
with Redis' clock, so two gateways behind a load balancer together admit exactly the limit.
Concurrent slots in Redis are held per request with an expiry, so a crashed instance's slots
come back after `hold_ttl_s`.

A token limit is charged with an estimate at admission (prompt characters / 4 plus
`max_tokens`, or `router.expected_output_tokens` when unset) and settled with the usage the
upstream reported when the request ends.

Refusals are 429 `ERR_RATE_LIMITED` with `Retry-After` (seconds) and OpenAI's headers;
admitted answers carry `x-ratelimit-limit-requests`, `x-ratelimit-remaining-requests`,
`x-ratelimit-reset-requests` (and the `-tokens` three) of the tightest scope.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from hybridfast._core import RateLimiter
from hybridfast.config import Config, RateLimitConfig
from hybridfast.errors import RateLimited
from hybridfast.metrics import Counter
from hybridfast.types import ANONYMOUS, Caller, ChatRequest, EmbeddingRequest

# Refusals by scope kind ("key", "team", ...) and limit ("requests", "tokens", "parallel").
REFUSED = Counter(
    "hybridfast_ratelimit_refused",
    "Requests refused by a rate limit, by scope kind and limit kind.",
    ["scope", "limit"],
)
ADMITTED = Counter(
    "hybridfast_ratelimit_admitted",
    "Requests a rate limit looked at and admitted.",
    [],
)

STATE_KEY = "ratelimit"


@dataclass(frozen=True, slots=True)
class Window:
    limit: int
    remaining: int
    reset_ms: int


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a backend decided for one request."""

    allowed: bool
    denied_scope: str | None = None
    denied_kind: str | None = None
    retry_after_ms: int | None = 0  # None: it can never fit (larger than the limit)
    requests: Window | None = None
    tokens: Window | None = None


@dataclass(slots=True)
class Hold:
    """An admitted request's charge, given back or corrected when it ends."""

    scopes: list[str]
    estimated: int
    hold_id: str


class Backend(Protocol):
    async def acquire(self, scopes: list[str], tokens: int, hold_id: str) -> Verdict: ...
    async def settle(self, hold: Hold, actual: int) -> None: ...
    def configure(self, scope: str, rule: RateLimitConfig | Limit) -> None: ...
    def remove(self, scope: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Limit:
    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _window(raw: tuple[int, int, int] | None) -> Window | None:
    return Window(*raw) if raw is not None else None


class LocalBackend:
    """One instance: the core limiter, in process."""

    def __init__(self) -> None:
        self.core = RateLimiter()

    def configure(self, scope: str, rule: RateLimitConfig | Limit) -> None:
        self.core.configure(scope, rule.rpm, rule.tpm, rule.max_parallel)

    def remove(self, scope: str) -> None:
        self.core.remove(scope)

    async def acquire(self, scopes: list[str], tokens: int, hold_id: str) -> Verdict:
        d = self.core.acquire(scopes, tokens, _now_ms())
        return Verdict(
            d.allowed,
            d.denied_scope,
            d.denied_kind,
            d.retry_after_ms,
            _window(d.requests),
            _window(d.tokens),
        )

    async def settle(self, hold: Hold, actual: int) -> None:
        self.core.settle(hold.scopes, hold.estimated, actual, _now_ms())


def scope_name(kind: str, name: str | None) -> str:
    return kind if kind == "global" else f"{kind}:{name}"


def scopes_for(caller: Caller, requested: str) -> list[str]:
    """Every scope a request falls under; only configured ones count."""
    scopes = ["global", f"model:{requested}", f"route:{requested}"]
    if caller.key_name:
        scopes.append(f"key:{caller.key_name}")
    if caller.user:
        scopes.append(f"user:{caller.user}")
    if caller.team:
        scopes.append(f"team:{caller.team}")
    return scopes


def estimate_tokens(request: ChatRequest | EmbeddingRequest, default_output: int) -> int:
    """Roughly 4 characters a token for the prompt, plus the output the request allows."""
    if isinstance(request, EmbeddingRequest):
        chars = sum(len(x) if isinstance(x, str) else 4 * len(x) for x in request.inputs)
        return max(1, chars // 4)
    chars = 0
    for message in request.messages:
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(
                len(str(part.get("text", ""))) for part in content if isinstance(part, dict)
            )
    output = request.max_tokens if request.max_tokens is not None else default_output
    return max(1, chars // 4 + output)


def format_reset(ms: int) -> str:
    """OpenAI's duration format: `20ms`, `1s`, `6m0s`, `1h2m3s`."""
    if ms < 1000:
        return f"{ms}ms"
    seconds = math.ceil(ms / 1000)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def headers_for(verdict: Verdict) -> dict[str, str]:
    headers: dict[str, str] = {}
    for kind, window in (("requests", verdict.requests), ("tokens", verdict.tokens)):
        if window is not None:
            headers[f"x-ratelimit-limit-{kind}"] = str(window.limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(window.remaining)
            headers[f"x-ratelimit-reset-{kind}"] = format_reset(window.reset_ms)
    return headers


def refusal(verdict: Verdict) -> RateLimited:
    headers = headers_for(verdict)
    scope = verdict.denied_scope or "global"
    kind = verdict.denied_kind or "requests"
    REFUSED.inc((scope.split(":", 1)[0], kind))
    if verdict.retry_after_ms is None:
        return RateLimited(
            f"the request needs more tokens than the {scope} limit allows in a minute",
            code="ERR_RATE_LIMITED",
            hint="send a shorter prompt or a smaller max_tokens",
            headers=headers,
        )
    # A parallel slot frees when a running request ends: a second is a fair guess.
    retry_s = max(1, math.ceil(verdict.retry_after_ms / 1000))
    headers["Retry-After"] = str(retry_s)
    what = {"parallel": "concurrent requests"}.get(kind, f"{kind} per minute")
    return RateLimited(f"rate limit of {scope} reached ({what})", headers=headers)


class RateLimits:
    """The hook pair and the backend; `install(gateway)` attaches it."""

    def __init__(self, config: Config, backend: Backend) -> None:
        self.backend = backend
        self.default_output = config.router.expected_output_tokens
        # With no scope configured the hooks are detached (`ratelimit_hooks`): called
        # whenever `configured` changes, so they can attach or detach.
        self.on_change: Callable[[], None] | None = None
        self.configured: set[str] = set()
        for rule in config.limits.rules:
            scope = scope_name(rule.scope, rule.name)
            self.backend.configure(scope, rule)
            self.configured.add(scope)

    def set_key_limits(self, key_name: str, limit: Limit | None) -> None:
        """Limits of a virtual key created at run time (None: no key limit)."""
        scope = f"key:{key_name}"
        if limit is None or (limit.rpm, limit.tpm, limit.max_parallel) == (None, None, None):
            self.backend.remove(scope)
            self.configured.discard(scope)
        else:
            self.backend.configure(scope, limit)
            self.configured.add(scope)
        if self.on_change is not None:
            self.on_change()

    async def admit(
        self, caller: Caller, request: ChatRequest | EmbeddingRequest
    ) -> tuple[Hold | None, dict[str, str]]:
        """Admits the request or raises `RateLimited`; the headers go on the answer. No hold
        when no limit is configured at all."""
        if not self.configured:
            return None, {}
        scopes = scopes_for(caller or ANONYMOUS, request.model)
        tokens = estimate_tokens(request, self.default_output)
        hold_id = secrets.token_hex(8)
        verdict = await self.backend.acquire(scopes, tokens, hold_id)
        if not verdict.allowed:
            raise refusal(verdict)
        ADMITTED.inc(())
        return Hold(scopes, tokens, hold_id), headers_for(verdict)

    async def release(self, hold: Hold, actual_tokens: int) -> None:
        await self.backend.settle(hold, actual_tokens)


def usage_tokens(usage: Any) -> int:
    return int(getattr(usage, "input_tokens", 0) or 0) + int(
        getattr(usage, "output_tokens", 0) or 0
    )
