"""Routing: which deployments serve a request, in which order.

`build_router(config, deployments)` is what the pipeline calls. Until the native router
lands this is the simplest correct policy: a group's deployments in config order, a route's
candidates expanded in order.
"""

from __future__ import annotations

from hybridfast.config import Config
from hybridfast.errors import ModelNotFound
from hybridfast.types import Caller, Deployment, RequestFeatures, RoutePlan, Router


class InOrderRouter:
    def __init__(self, config: Config, deployments: list[Deployment]) -> None:
        self._groups: dict[str, list[Deployment]] = {}
        for d in deployments:
            self._groups.setdefault(d.name, []).append(d)
        self._routes = {name: list(r.candidates) for name, r in config.routes.items()}

    def _expand(self, name: str, seen: set[str]) -> list[Deployment]:
        if name in self._groups:
            return list(self._groups[name])
        if name in self._routes and name not in seen:
            seen.add(name)
            return [d for c in self._routes[name] for d in self._expand(c, seen)]
        return []

    def plan(self, name: str, features: RequestFeatures, caller: Caller) -> RoutePlan:
        deployments = self._expand(name, set())
        if not deployments:
            raise ModelNotFound(f"the model {name!r} does not exist")
        return RoutePlan(deployments=deployments, strategy="in-order")

    def started(self, deployment_id: str) -> None:
        pass

    def finished(
        self,
        deployment_id: str,
        *,
        ok: bool,
        latency_s: float,
        ttft_s: float | None,
        output_tokens: int,
    ) -> None:
        pass


def build_router(config: Config, deployments: list[Deployment]) -> Router:
    return InOrderRouter(config, deployments)


def describe_plan(plan: RoutePlan) -> str:
    """A human-readable account of a routing decision, for `route --explain`."""
    lines = [f"strategy: {plan.strategy}"]
    lines += [f"  {i + 1}. {d.id} ({d.provider}/{d.model})" for i, d in enumerate(plan.deployments)]
    lines += [f"  dropped {dep}: {why}" for dep, why in plan.dropped]
    return "\n".join(lines)
