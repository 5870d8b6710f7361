"""Money and tokens of one request: the budget hold, estimates, the exact charge, and the
check that an upstream's usage is usable at all. Integer picodollars throughout; the
prices themselves are computed by the core (`Price.cost`)."""

from __future__ import annotations

from hybridfast._core import gpu_time_cost
from hybridfast.pricing import estimate_tokens
from hybridfast.types import ChatRequest, Deployment, Usage

# The output a request may produce when neither it nor the deployment says: what the budget
# hold assumes.
DEFAULT_MAX_OUTPUT_TOKENS = 4096
# The generation rate a budget hold assumes for a deployment priced per GPU-second.
SLOW_TOKENS_PER_S = 10.0
# More tokens than any model reads or writes in one call: a count above it is corrupt.
MAX_TOKENS_PER_CALL = 1 << 31
_COUNTS = (
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)


class BadUsage(ValueError):
    """An upstream reported token counts that cannot be billed (negative, huge, not integers)."""


def checked_usage(usage: Usage) -> Usage:
    """`usage` if every count is a plain integer in [0, 2^31); raises `BadUsage` otherwise.
    Upstream JSON decides these types: `12.5`, `"12"`, `-1` and `1e30` all arrive."""
    counts = (
        usage.input_tokens,
        usage.output_tokens,
        usage.cached_input_tokens,
        usage.cache_write_tokens,
        usage.reasoning_tokens,
    )
    for name, value in zip(_COUNTS, counts, strict=True):
        if type(value) is not int or not 0 <= value < MAX_TOKENS_PER_CALL:
            raise BadUsage(f"the upstream reported {name} = {value!r}")
    return usage


def prompt_text(request: ChatRequest) -> str:
    parts: list[str] = []
    for m in request.messages:
        content = m.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p.get("text", "") for p in content if p.get("type") == "text")
    return "\n".join(parts)


def input_estimate(request: ChatRequest) -> int:
    return estimate_tokens("", request.model, prompt_text(request))


def worst_case(deployment: Deployment, request: ChatRequest, input_tokens: int) -> int:
    """What the budget holds before the call: the whole prompt and the most output the
    request may produce, at this deployment's prices."""
    out = request.max_tokens or deployment.max_output_tokens or DEFAULT_MAX_OUTPUT_TOKENS
    worst = int(deployment.price.cost(input_tokens, out))
    if deployment.gpu_second:
        # GPU time has no token bound: hold for the whole output at a slow generation rate.
        seconds = out / min(deployment.tokens_per_s or SLOW_TOKENS_PER_S, SLOW_TOKENS_PER_S)
        worst += gpu_time_cost(deployment.gpu_second, seconds)
    return worst


def estimated_usage(deployment: Deployment, input_tokens: int, output_text: str) -> Usage:
    """Usage counted by the gateway (a cut stream, an upstream that reports none)."""
    return Usage(
        input_tokens=input_tokens,
        output_tokens=estimate_tokens(deployment.kind, deployment.model, output_text),
        estimated=True,
    )


def charge(deployment: Deployment, usage: Usage, seconds: float) -> int:
    """Tokens at the deployment's prices, plus the upstream's time for a local GPU priced per
    GPU-second (exact price × measured time, rounded to the picodollar by the core)."""
    tokens = deployment.price.cost(
        usage.input_tokens,
        usage.output_tokens,
        usage.cached_input_tokens,
        usage.cache_write_tokens,
        usage.reasoning_tokens,
    )
    if not deployment.gpu_second:
        return int(tokens)
    return int(tokens) + gpu_time_cost(deployment.gpu_second, max(seconds, 0.0))


def add_usage(a: Usage, b: Usage) -> Usage:
    return Usage(
        input_tokens=a.input_tokens + b.input_tokens,
        output_tokens=a.output_tokens + b.output_tokens,
        cached_input_tokens=a.cached_input_tokens + b.cached_input_tokens,
        cache_write_tokens=a.cache_write_tokens + b.cache_write_tokens,
        reasoning_tokens=a.reasoning_tokens + b.reasoning_tokens,
        estimated=a.estimated or b.estimated,
    )
