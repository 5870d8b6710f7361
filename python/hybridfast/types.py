"""The types the request pipeline shares with the parts it calls.

`hybridfast.pipeline` runs every request through: validate → cache lookup → route →
attempt (hold budget → call → stream → settle) with fallback → cache store. Each step that is
not plain I/O is an object behind one of the protocols below (`Router`, `Ledger`,
`ResponseCache`), built from the config at start-up, so the pipeline reads the same whoever
implements them. This module is the bottom layer: it imports nothing of the package but the
core.

Money is always integer picodollars (`hybridfast._core.PICODOLLARS_PER_USD` per dollar).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import msgspec

from hybridfast._core import Price

Picodollars = int
CacheResult = Literal["hit", "miss", "semantic-hit", "bypass"]


class Caller(msgspec.Struct, frozen=True):
    """Who is calling, as the auth step resolved it; the key itself never travels."""

    key_name: str | None = None
    user: str | None = None
    team: str | None = None
    tags: tuple[str, ...] = ()


ANONYMOUS = Caller()


class Usage(msgspec.Struct):
    """Token counts, normalised: `input_tokens` is the whole prompt, cached and written
    tokens are parts of it; `output_tokens` includes reasoning tokens."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    # True when counted by the gateway (a cut stream, an upstream that reports none).
    estimated: bool = False


@dataclass(frozen=True, slots=True)
class Deployment:
    """One model on one provider, as the config declared it (`models[i]`)."""

    id: str  # unique and stable: "<name>#<index among models of that name>", e.g. "smart#1"
    name: str  # the group it belongs to
    provider: str  # the provider's name in config
    kind: str  # the provider's kind: openai, anthropic, ollama, openai-compatible, local
    model: str  # the upstream's model id
    local: bool
    quality: float
    price: Price
    context_window: int | None = None
    max_output_tokens: int | None = None
    capabilities: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()
    max_concurrency: int | None = None
    ttft_ms: float | None = None
    tokens_per_s: float | None = None
    dimensions: int | None = None
    # Picodollars per second of upstream time, for local GPUs priced by the hour, not the token.
    gpu_second: Picodollars = 0


@dataclass(slots=True)
class RequestFeatures:
    """What the router needs to know about a request to choose where it goes."""

    request_id: str
    input_tokens: int  # an estimate made before the call
    max_output_tokens: int | None = None
    stream: bool = False
    needs: frozenset[str] = frozenset()  # "tools", "vision", "json", "embeddings"
    priority: int = 0
    tags: tuple[str, ...] = ()  # e.g. ("local-only",)
    budget_remaining: Picodollars | None = None


@dataclass(slots=True)
class RoutePlan:
    """The router's answer: deployments in the order to try them, and why others were dropped."""

    deployments: list[Deployment]
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (deployment id, reason)
    strategy: str = "first"
    arm: str | None = None  # the A/B arm for `weighted` routes
    scores: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class LedgerRecord:
    """One request's line in the ledger."""

    request_id: str
    caller: Caller
    route: str  # the name the client asked for
    deployment: str | None  # the deployment id that answered (None: nobody did)
    provider: str | None
    model: str | None
    usage: Usage
    cost: Picodollars
    latency_ms: float
    ttft_ms: float | None
    status: int  # the HTTP status the client got
    cache: CacheResult = "miss"
    fallbacks: int = 0
    saved_cost: Picodollars = 0  # for cache hits: what the answer cost when first made
    timestamp: float = field(default_factory=time.time)
    parent_id: str | None = None  # the request this is a step of (a prompt chain's id)


@dataclass(slots=True)
class Reservation:
    """Budget held for a request between `reserve` and `settle`/`release`."""

    request_id: str
    amount: Picodollars
    scopes: tuple[str, ...] = ()
    handle: Any = None  # the ledger's own bookkeeping


class ChatRequest(msgspec.Struct, kw_only=True):
    """A chat request in the gateway's own form, whichever protocol the client spoke.

    It follows OpenAI Chat Completions semantics: `messages` are OpenAI-shaped dicts with the
    system prompt first (role "system"); the Anthropic adapter translates to and from it.
    """

    model: str
    messages: list[dict[str, Any]]
    stream: bool = False
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    user: str | None = None
    include_usage: bool = False
    # Other parameters, passed through to upstreams that understand them.
    extra: dict[str, Any] = msgspec.field(default_factory=dict)
    # Per-request cache control (`Cache-Control` header or the body's `cache` field).
    cache_control: Literal["default", "no-cache", "no-store"] = "default"


class ChatAnswer(msgspec.Struct):
    """A complete chat answer in the gateway's own form: what the cache stores and replays."""

    content: str
    finish_reason: str = "stop"
    tool_calls: list[dict[str, Any]] = msgspec.field(default_factory=list)
    usage: Usage = msgspec.field(default_factory=Usage)
    model: str = ""
    deployment: str = ""
    cost: Picodollars = 0
    # Answer fields the gateway's form has no place for, kept for a client of the upstream's
    # protocol: {"message": {reasoning_content, annotations...}, "choice": {"logprobs": ...},
    # "response": {system_fingerprint, service_tier...}} (OpenAI's names).
    extra: dict[str, Any] = msgspec.field(default_factory=dict)


class StreamEvent:
    """One step of an answer, whatever the wire format: a piece of text, tool-call pieces,
    the finish reason (OpenAI vocabulary: stop, length, tool_calls, content_filter), usage.
    A non-streaming answer is a stream of one batch."""

    __slots__ = ("extra", "finish_reason", "text", "tool_calls", "usage")

    def __init__(
        self,
        text: str | None = None,
        *,
        tool_calls: list[dict[str, Any]] | None = None,
        finish_reason: str | None = None,
        usage: Usage | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        # tool_calls: [{"index": i, "id": str|None, "name": str|None, "arguments": str}]
        self.text = text
        self.tool_calls = tool_calls
        self.finish_reason = finish_reason
        self.usage = usage
        # A piece of `ChatAnswer.extra` (a reasoning delta, logprobs of this piece...).
        self.extra = extra

    def __repr__(self) -> str:
        parts = [f"{k}={getattr(self, k)!r}" for k in self.__slots__ if getattr(self, k)]
        return f"StreamEvent({', '.join(parts)})"


# Embedding request priorities: interactive requests go before queued batch work.
INTERACTIVE, BATCH = 0, 1
CacheMode = Literal["default", "no-cache", "no-store"]


@dataclass(slots=True)
class EmbeddingRequest:
    """An embeddings request in the gateway's own form (OpenAI semantics)."""

    model: str
    inputs: list[str] | list[list[int]]
    tokens: bool = False  # inputs are token id arrays
    # Whose ids they are: an OpenAI encoding (what OpenAI clients send: LangChain's
    # OpenAIEmbeddings sends cl100k_base ids whatever the model), or "native" (the local
    # model's own vocabulary).
    token_encoding: str = "cl100k_base"
    dimensions: int | None = None
    priority: int = INTERACTIVE
    cache: CacheMode = "default"
    user: str | None = None


@dataclass(slots=True)
class EmbeddingResult:
    """Embeddings of every input, in order (`vectors`: a float32 matrix, one row each)."""

    vectors: Any  # numpy.ndarray[float32], shape (len(inputs), dimensions)
    model: str  # the name the client asked for
    deployment: Deployment
    prompt_tokens: int  # all inputs, cached ones included
    cost: Picodollars  # for this request (cached texts cost nothing)
    cached: int  # inputs the exact cache answered
    request_id: str
    fallbacks: int = 0
    estimated: bool = False


class CacheHit(msgspec.Struct):
    answer: ChatAnswer
    kind: Literal["hit", "semantic-hit"]
    similarity: float = 1.0


class Router(Protocol):
    def plan(self, name: str, features: RequestFeatures, caller: Caller) -> RoutePlan:
        """Orders the deployments for `name` (a group or route). Raises `ModelNotFound` for an
        unknown name and `ProviderUnavailable`/`BudgetExceeded` when every one is dropped."""

    def started(self, deployment_id: str) -> None:
        """A call to this deployment began (in-flight count)."""

    def finished(
        self,
        deployment_id: str,
        *,
        ok: bool,
        latency_s: float,
        ttft_s: float | None,
        output_tokens: int,
    ) -> None:
        """A call ended: feeds latency EWMAs, error windows and the circuit breaker."""

    def abandoned(self, deployment_id: str) -> None:
        """A call ended with no verdict on the deployment (the client went away, or the
        upstream refused the request itself as malformed): it only stops counting as in
        flight, so bad requests and impatient clients never open a healthy circuit."""


class Ledger(Protocol):
    async def reserve(
        self,
        caller: Caller,
        deployment: Deployment,
        request_id: str,
        worst_case: Picodollars,
    ) -> Reservation:
        """Holds `worst_case` against every budget that applies; raises `BudgetExceeded`."""

    async def settle(self, reservation: Reservation, record: LedgerRecord) -> None:
        """Records the request durably and replaces the hold with the real cost. A request
        that held nothing (a cache hit, a failure before any hold) settles a zero
        `Reservation(request_id, 0)` it never reserved: one call, no hold to replace."""

    async def release(self, reservation: Reservation) -> None:
        """Drops a hold without spending (the call failed before any cost)."""

    def remaining(self, caller: Caller) -> Picodollars | None:
        """The smallest amount left across the caller's budgets (None: unlimited)."""

    async def close(self) -> None:
        """Flushes what is pending and closes the store."""


class CacheTicket(Protocol):
    """One request's cache decision, made once (`ResponseCache.ticket`); the cache keeps its
    keys in it, so the lookup and the store of a request compute them once."""

    lookup: bool  # it may be answered from the cache
    store: bool  # its answer may be kept


class ResponseCache(Protocol):
    """The pipeline's cache. One may also have `note_bypass() -> None`: then a request whose
    ticket says no lookup is counted there and `lookup` is not awaited for it (the built-in
    caches do; without it, `lookup` is called and answers the bypass itself)."""

    def ticket(self, request: ChatRequest, caller: Caller) -> CacheTicket:
        """The request's cache decision and keys, for its `lookup` and `store`."""

    async def lookup(
        self, request: ChatRequest, caller: Caller, ticket: Any = None
    ) -> CacheHit | None:
        """A stored answer for this request in the caller's scope, if any."""

    async def store(
        self, request: ChatRequest, caller: Caller, answer: ChatAnswer, ticket: Any = None
    ) -> None:
        """Keeps a finished answer (the pipeline calls it only for complete answers)."""

    def bypass(self, request: ChatRequest) -> bool:
        """True when this request is neither looked up nor kept (a sampled request, say):
        the answer's `x-hybridfast-cache` then says `bypass`, not `miss`."""

    async def close(self) -> None: ...
