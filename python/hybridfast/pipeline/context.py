"""`RequestContext`: everything one request carries through the pipeline, made once.

The server (or the CLI, or the Python API) creates it when a request arrives; every step
reads and fills it: the route and caller, the cache result, the deployment that answered,
usage and exact cost, timings, the status the client got. The server turns it into the
`x-hybridfast-*` headers and the `x_hybridfast` object of answers; hooks read it (and may
keep their own data in `state` and add response headers in `response_headers`).
"""

from __future__ import annotations

import itertools
import secrets
import time
from typing import Any, Literal

from hybridfast._core import format_usd
from hybridfast.errors import GatewayError
from hybridfast.types import ANONYMOUS, CacheResult, Caller, Deployment, Usage

# Which family of endpoint a request came through (hooks may treat them differently).
Endpoint = Literal["chat", "embeddings", "responses", "completions"]

_ID_PREFIX = secrets.token_hex(4)
_ID_COUNTER = itertools.count(1)
_perf = time.perf_counter


def new_request_id() -> str:
    """Unique per process and cheap: a random prefix and a counter."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):010x}"


class RequestContext:
    """One request's state. Create it with the caller and the route the client asked for
    (`route` may be filled in once the body is parsed); the pipeline fills in the rest."""

    __slots__ = (
        "arm",
        "cache",
        "caller",
        "cost",
        "deployment",
        "deployments",
        "ended",
        "endpoint",
        "error",
        "fallbacks",
        "first_byte",
        "input_estimate",
        "marks",
        "parent_id",
        "queue_s",
        "recovered",
        "request_id",
        "response_headers",
        "route",
        "saved_cost",
        "similarity",
        "started",
        "state",
        "status",
        "stream",
        "upstream_s",
        "usage",
    )

    def __init__(
        self,
        route: str = "",
        *,
        caller: Caller = ANONYMOUS,
        endpoint: Endpoint = "chat",
        request_id: str | None = None,
        stream: bool = False,
    ) -> None:
        self.request_id = request_id or new_request_id()
        self.parent_id: str | None = None  # the request this is a step of (a prompt chain)
        self.route = route  # the model, group or route name the client asked for
        self.caller = caller
        self.endpoint: Endpoint = endpoint
        self.stream = stream
        self.started = _perf()
        self.ended: float | None = None
        self.first_byte: float | None = None  # perf_counter at the first upstream byte
        self.upstream_s = 0.0  # time spent waiting on upstreams
        self.queue_s = 0.0  # time spent waiting for a free slot at a busy deployment
        self.deployment: Deployment | None = None  # the deployment that (last) answered
        self.deployments: list[str] = []  # every deployment that produced part of the answer
        # Until a lookup says otherwise: a request refused or failed before it (a bad body,
        # a rate limit, a chain's earlier step) never consulted the cache.
        self.cache: CacheResult = "bypass"
        self.similarity: float | None = None  # of the question a semantic hit answered
        self.usage = Usage()
        self.cost = 0  # picodollars
        self.saved_cost = 0  # for cache hits: what the answer cost when first made
        self.fallbacks = 0
        self.recovered = False  # a broken stream was continued on another deployment
        self.input_estimate = 0
        self.arm: str | None = None  # the A/B arm of a `weighted` route
        self.status = 200  # the HTTP status the client got (or gets)
        self.error: GatewayError | None = None  # what the client was told, when it failed
        # Headers a hook wants on the answer (rate-limit counters, trace ids, ...).
        self.response_headers: dict[str, str] = {}
        # Per-request data of hooks, by the hook's own key (a span, a queue ticket, ...).
        self.state: dict[str, Any] = {}
        # perf_counter marks of the steps (cache_start, cache_end, route_end, attempt_start
        # (the first attempt's), settle_start, settle_end): tracing turns them into spans,
        # the request record takes the queue time from them.
        self.marks: dict[str, float] = {}

    @property
    def deployment_id(self) -> str:
        return self.deployment.id if self.deployment is not None else "none"

    @property
    def cost_usd(self) -> str:
        return format_usd(self.cost)

    @property
    def latency_s(self) -> float:
        return (self.ended or _perf()) - self.started

    @property
    def ttft_s(self) -> float | None:
        """Time to the first upstream byte (streams only)."""
        if not self.stream or self.first_byte is None:
            return None
        return max(0.0, self.first_byte - self.started)

    def overhead_s(self) -> float:
        """The gateway's own time: elapsed minus the time spent waiting on upstreams and in
        a deployment's queue."""
        waited = self.upstream_s + self.queue_s
        return max(0.0, (self.ended or _perf()) - self.started - waited)

    def headers(self, *, cost_known: bool = True) -> dict[str, str]:
        """The `x-hybridfast-*` headers of the answer (and whatever hooks added)."""
        headers = {
            "x-hybridfast-request-id": self.request_id,
            "x-hybridfast-deployment": self.deployment_id,
            "x-hybridfast-cost-usd": format_usd(self.cost) if cost_known else "pending",
            "x-hybridfast-cache": self.cache,
            "x-hybridfast-overhead-ms": f"{self.overhead_s() * 1000:.3f}",
        }
        if self.route:
            # The body's `model` is the upstream's model; the name the client asked for is here.
            headers["x-hybridfast-model"] = self.route
        # What the SDKs read as the request id (`_request_id`): OpenAI's and Anthropic's names.
        headers["x-request-id"] = headers["request-id"] = self.request_id
        if self.arm is not None:
            headers["x-hybridfast-arm"] = self.arm
        if self.queue_s:
            headers["x-hybridfast-queue-ms"] = f"{self.queue_s * 1000:.1f}"
        if self.cache == "semantic-hit" and self.similarity is not None:
            headers["x-hybridfast-cache-similarity"] = f"{self.similarity:.4f}"
        if self.response_headers:
            headers.update(self.response_headers)
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
