"""An example custom router: short prompts to the cheapest healthy deployment (local ones
first), long prompts to the best one, and nothing to a deployment that is failing a lot.

Use it from `examples/custom-router.yaml`:

    PYTHONPATH=examples python -m hybridfast serve --config examples/custom-router.yaml

or package it and register it under the entry-point group `hybridfast.routers`
(in pyproject.toml: `[project.entry-points."hybridfast.routers"]
prompt-length = "my_package.routing:PromptLengthRouter"`) and write `router: prompt-length`.
"""

from __future__ import annotations

from collections.abc import Sequence

from hybridfast.routing import Candidate
from hybridfast.types import Caller, RequestFeatures


class PromptLengthRouter:
    """The route's `options` arrive as keyword arguments, once, at start-up."""

    def __init__(self, short_prompt_tokens: int = 1000, max_error_rate: float = 0.3) -> None:
        self.short_prompt_tokens = short_prompt_tokens
        self.max_error_rate = max_error_rate

    def order(
        self,
        route: str,
        candidates: Sequence[Candidate],
        features: RequestFeatures,
        caller: Caller,
    ) -> list[Candidate]:
        # The core already dropped what cannot serve the request (open circuits,
        # missing capabilities, context window, budget); this only orders the rest.
        healthy = [c for c in candidates if c.stats["error_rate"] <= self.max_error_rate]
        pool = healthy or list(candidates)
        if features.input_tokens <= self.short_prompt_tokens:
            return sorted(pool, key=lambda c: (not c.deployment.local, c.expected_cost))
        return sorted(pool, key=lambda c: (-c.deployment.quality, c.expected_cost))
