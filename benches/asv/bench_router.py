"""asv: one routing decision over 32 candidates and one state update, through the public
Python API (run with `asv run --python=same` against the working tree)."""

from __future__ import annotations

from hybridfast.config import Config, ModelConfig, PriceConfig, ProviderConfig, RouteConfig
from hybridfast.deployments import build_deployments
from hybridfast.routing import build_router
from hybridfast.types import Caller, RequestFeatures


class TimeRouter:
    def setup(self) -> None:
        models = [
            ModelConfig(
                name=f"m{i}",
                provider="cloud",
                model=f"model-{i}",
                quality=0.5 + (i % 9) / 20,
                price=PriceConfig(input_per_mtok=i + 1, output_per_mtok=4 * (i + 1)),
                capabilities=["tools"] if i % 3 else [],
            )
            for i in range(32)
        ]
        config = Config(
            providers=[ProviderConfig(name="cloud", kind="openai", api_key="x")],
            models=models,
            routes={
                "balanced": RouteConfig(candidates=[m.name for m in models]),
                "cost": RouteConfig(strategy="cost", candidates=[m.name for m in models]),
            },
        )
        self.router = build_router(config, build_deployments(config))
        self.features = RequestFeatures(
            request_id="r", input_tokens=1200, max_output_tokens=400, needs=frozenset({"tools"})
        )
        self.caller = Caller()

    def time_plan_balanced_32(self) -> None:
        self.router.plan("balanced", self.features, self.caller)

    def time_plan_cost_32(self) -> None:
        self.router.plan("cost", self.features, self.caller)

    def time_started_finished(self) -> None:
        self.router.started("m1#0")
        self.router.finished("m1#0", ok=True, latency_s=1.0, ttft_s=0.2, output_tokens=100)
