"""Routing: which deployments serve a request, in which order.

`build_router(config, deployments)` builds a `NativeRouter`: the decision is one call into
the Rust core (`hybridfast._core.RouterCore.plan`) that filters the candidates of the name
asked for (capabilities, context window, locality, tags, `min_quality`, `max_cost_usd`,
concurrency limits, circuit breakers, the caller's budget), orders the rest by the route's
strategy from static facts and live state, and hands back the `Deployment` objects in
order with the reasons for every one dropped. `started`/`finished` feed live state back
(latency EWMAs, error window, circuit breaker) in one native call each.

Routes with `strategy: custom` are ordered afterwards by a Python class (see `custom.py`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hybridfast._core import (
    CAPABILITIES,
    DeploymentSpec,
    HybridfastError,
    RouterCore,
    RouteSpec,
    format_usd,
    parse_usd,
)
from hybridfast.config import Config, ModelConfig
from hybridfast.errors import (
    BudgetExceeded,
    ConfigError,
    ModelNotFound,
    ProviderUnavailable,
    QueueFull,
    Unsupported,
)
from hybridfast.routing import metrics as router_metrics
from hybridfast.routing.custom import Candidate, CustomRouter, load_custom_router
from hybridfast.types import Caller, Deployment, RequestFeatures, RoutePlan

__all__ = [
    "Candidate",
    "CustomRouter",
    "NativeRouter",
    "Plan",
    "build_router",
    "describe_plan",
]

log = logging.getLogger("hybridfast.routing")

# Tags with a meaning of their own rather than "the deployment must carry this tag".
LOCAL_ONLY = "local-only"
# The bit of a capability no deployment has: needing it empties the plan.
_NOBODY_CAP = 1 << 31
# A deployment listed without `capabilities:` may do anything: the upstream decides.
_UNKNOWN_CAPS = _NOBODY_CAP - 1
# Picodollar budgets are i64 in the core (±$9.2M); larger ones are clamped.
_I64_MAX = (1 << 63) - 1
_I64_MIN = -(1 << 63)


@dataclass(slots=True)
class Plan(RoutePlan):
    """A `RoutePlan` with what `--explain` shows besides: the name asked for, what the
    scores measure, and the half-open deployment this plan probes (put first)."""

    route: str = ""
    score_meaning: str = ""
    probe: str | None = None


class NativeRouter:
    """The `Router` the pipeline uses: thread-safe, one native call per decision."""

    def __init__(self, config: Config, deployments: list[Deployment]) -> None:
        self.config = config
        self.deployments = list(deployments)
        self._by_id = {d.id: d for d in deployments}
        cap_names = list(CAPABILITIES)
        for d in deployments:
            cap_names += sorted(c for c in d.capabilities if c not in cap_names)
        if len(cap_names) > 31:
            raise ConfigError("models: more than 31 distinct capabilities")
        self._cap_bits = {name: 1 << i for i, name in enumerate(cap_names)}
        tag_names = sorted({t for d in deployments for t in d.tags})
        if len(tag_names) > 63:
            raise ConfigError("models: more than 63 distinct tags")
        self._tag_bits = {name: 1 << i for i, name in enumerate(tag_names)}
        self._needs_cache: dict[frozenset[str], int] = {}
        self._tags_cache: dict[tuple[str, ...], tuple[int, bool]] = {}
        models = _models_by_id(config)
        specs = [self._spec(d, models.get(d.id)) for d in deployments]
        routes = [_route_spec(name, r) for name, r in config.routes.items()]
        r = config.router
        c = r.circuit
        if r.group_strategy in ("weighted", "custom"):
            raise ConfigError(
                f"router.group_strategy: {r.group_strategy!r} needs a route of its own",
                hint="use a route with candidates and weights/router instead",
            )
        try:
            self._core = RouterCore(
                specs,
                routes,
                self.deployments,
                group_strategy=r.group_strategy,
                ewma_alpha=r.ewma_alpha,
                default_ttft_s=r.default_ttft_ms / 1000.0,
                default_tokens_per_s=r.default_tokens_per_s,
                expected_output_tokens=r.expected_output_tokens,
                failures_to_open=c.failures_to_open,
                error_rate_to_open=c.error_rate_to_open,
                window_s=c.window_s,
                min_requests=c.min_requests,
                cooldown_s=c.cooldown_s,
                jitter=c.jitter,
                successes_to_close=c.successes_to_close,
                probe_timeout_s=c.probe_timeout_s,
                # With admission queueing, a deployment at its limit still takes waiters.
                max_queue=config.queue.max_queue if config.queue.enabled else 0,
                local_max_wait_s=config.queue.local_max_wait_s,
            )
        except (HybridfastError, OverflowError, ValueError) as exc:
            raise ConfigError(f"routes: {exc}", hint="check routes and router settings") from None
        self._custom: dict[str, CustomRouter] = {
            name: load_custom_router(route.router, dict(route.options), f"routes.{name}.router")
            for name, route in config.routes.items()
            if route.strategy == "custom" and route.router
        }
        router_metrics.track(self)

    def _spec(self, d: Deployment, model: ModelConfig | None) -> DeploymentSpec:
        return DeploymentSpec(
            d.id,
            d.name,
            local=d.local,
            quality=d.quality,
            price=d.price,
            gpu_second=d.gpu_second,
            context_window=d.context_window,
            max_output_tokens=d.max_output_tokens,
            capabilities=self._bits(self._cap_bits, d.capabilities)
            if d.capabilities
            else _UNKNOWN_CAPS,
            tags=self._bits(self._tag_bits, d.tags),
            max_concurrency=d.max_concurrency,
            ttft_s=None if d.ttft_ms is None else d.ttft_ms / 1000.0,
            tokens_per_s=d.tokens_per_s,
        )

    @staticmethod
    def _bits(table: dict[str, int], names: Iterable[str]) -> int:
        mask = 0
        for name in names:
            mask |= table[name]
        return mask

    def _needs(self, needs: frozenset[str]) -> int:
        mask = 0
        for name in needs:
            mask |= self._cap_bits.get(name, _NOBODY_CAP)
        if len(self._needs_cache) < 256:
            self._needs_cache[needs] = mask
        return mask

    def _tags(self, tags: tuple[str, ...]) -> tuple[int, bool]:
        # A tag that some deployment carries is a requirement; any other tag (a key's
        # label for budgets or reports) says nothing about where the request may go.
        mask, local_only = 0, False
        for tag in tags:
            if tag == LOCAL_ONLY:
                local_only = True
            else:
                mask |= self._tag_bits.get(tag, 0)
        if len(self._tags_cache) < 256:
            self._tags_cache[tags] = (mask, local_only)
        return mask, local_only

    def _unsupported(self, name: str, needs: frozenset[str]) -> Unsupported:
        """Every candidate is declared unable to do what the request needs: a client error
        (a retry cannot help), naming what is missing and the models that have it."""
        missing = sorted(needs)
        able = sorted(
            {d.name for d in self.deployments if not d.capabilities or needs <= d.capabilities}
        )
        message = f"{name!r} is declared without {', '.join(missing)} (its `capabilities:` list)"
        if able:
            message += f"; models that have it: {', '.join(able)}"
        return Unsupported(message)

    # --- the Router protocol -------------------------------------------------------

    def plan(self, name: str, features: RequestFeatures, caller: Caller) -> Plan:
        needs = self._needs_cache.get(features.needs)
        if needs is None:
            needs = self._needs(features.needs)
        tags, local_only = (0, False)
        if features.tags:
            cached = self._tags_cache.get(features.tags)
            tags, local_only = cached if cached is not None else self._tags(features.tags)
        if caller.tags and LOCAL_ONLY in caller.tags:
            local_only = True
        budget = features.budget_remaining
        if budget is not None and not _I64_MIN <= budget <= _I64_MAX:
            budget = max(_I64_MIN, min(budget, _I64_MAX))  # beyond $9.2M: as good as unlimited
        out = self._core.plan(
            name,
            features.request_id,
            features.input_tokens,
            features.max_output_tokens,
            features.stream,
            needs,
            tags,
            local_only,
            budget,
        )
        if out is None:
            raise ModelNotFound(f"the model {name!r} does not exist")
        deployments, dropped, strategy, arm, scores, refused_for_budget, probe = out
        if not deployments:
            if features.needs and dropped and all(_LACKS in why for _, why in dropped):
                raise self._unsupported(name, features.needs)
            raise _refusal(name, dropped, refused_for_budget)
        plan = Plan(deployments, dropped, strategy, arm, scores, name, "", probe)
        if strategy == "custom":
            self._order_custom(plan, features, caller)
        return plan

    def started(self, deployment_id: str) -> None:
        self._core.started(deployment_id)

    def finished(
        self,
        deployment_id: str,
        *,
        ok: bool,
        latency_s: float,
        ttft_s: float | None,
        output_tokens: int,
    ) -> None:
        self._core.finished(
            deployment_id,
            ok=ok,
            latency_s=latency_s,
            ttft_s=ttft_s,
            output_tokens=output_tokens,
        )

    def abandoned(self, deployment_id: str) -> None:
        self._core.abandoned(deployment_id)

    async def close(self) -> None:
        """Nothing to flush (the state lives in memory); stops reporting metrics."""
        router_metrics.untrack(self)

    # --- beyond the protocol -------------------------------------------------------

    def explain(self, name: str, features: RequestFeatures, caller: Caller) -> Plan:
        """The decision `plan` would make, for `route --explain`: an empty plan is returned
        rather than raised, and says what the scores measure. Like a real plan it may
        claim a half-open deployment's probe slot (for a second at most)."""
        needs = self._needs(features.needs)
        tags, local_only = self._tags(features.tags)
        if caller.tags and LOCAL_ONLY in caller.tags:
            local_only = True
        budget = features.budget_remaining
        if budget is not None:
            budget = max(_I64_MIN, min(budget, _I64_MAX))
        out = self._core.plan(
            name,
            features.request_id,
            features.input_tokens,
            features.max_output_tokens,
            features.stream,
            needs,
            tags,
            local_only,
            budget,
        )
        if out is None:
            raise ModelNotFound(f"the model {name!r} does not exist")
        deployments, dropped, strategy, arm, scores, _, probe = out
        plan = Plan(deployments, dropped, strategy, arm, scores, name, "", probe)
        if deployments and strategy == "custom":
            self._order_custom(plan, features, caller)
        plan.score_meaning = RouterCore.score_meaning(_base_strategy(plan.strategy))
        return plan

    def stats(self, deployment_id: str) -> dict[str, Any]:
        """Live state of one deployment (see `RouterCore.stats`)."""
        return self._core.stats(deployment_id)

    def set_hardware(self, deployment_id: str, load: float | None) -> None:
        """The state of the GPU a deployment runs on: its load (0..1), or None when down."""
        self._core.set_hardware(deployment_id, load)

    def all_stats(self) -> dict[str, dict[str, Any]]:
        return {d.id: self._core.stats(d.id) for d in self.deployments}

    def expected_cost(self, deployment_id: str, features: RequestFeatures) -> int:
        """Picodollars the router expects this request to cost on that deployment."""
        return self._core.expected_cost(
            deployment_id, features.input_tokens, features.max_output_tokens, features.stream
        )

    def names(self) -> list[str]:
        return self._core.names()

    def _order_custom(self, plan: Plan, features: RequestFeatures, caller: Caller) -> None:
        router = self._custom.get(plan.route)
        if router is None:
            return
        candidates = [
            Candidate(
                deployment=d,
                score=plan.scores[d.id],
                expected_cost=self.expected_cost(d.id, features),
                stats=self._core.stats(d.id),
            )
            for d in plan.deployments
        ]
        allowed = {c.id: c.deployment for c in candidates}
        try:
            chosen = router.order(plan.route, candidates, features, caller)
        except Exception:
            # A bug in a custom router must not take the route down: keep the core's order.
            log.exception("custom router of route %r failed; using the balanced order", plan.route)
            plan.strategy = "custom (failed: balanced order)"
            return
        ordered: list[Deployment] = []
        for item in chosen:
            dep_id = item if isinstance(item, str) else item.id
            dep = allowed.pop(dep_id, None)
            if dep is not None:
                ordered.append(dep)
        if not ordered:
            raise ProviderUnavailable(
                f"the custom router of {plan.route!r} chose none of "
                f"{', '.join(c.id for c in candidates)}"
            )
        plan.dropped += [(dep_id, "left out by the custom router") for dep_id in allowed]
        plan.deployments = ordered


_LACKS = "lacks capability"


def _refusal(name: str, dropped: list[tuple[str, str]], budget: bool) -> Exception:
    reasons = "; ".join(f"{dep}: {why}" for dep, why in dropped)
    if budget:
        return BudgetExceeded(f"no deployment for {name!r} fits the remaining budget ({reasons})")
    if dropped and all(why.startswith("saturated") for _, why in dropped):
        # Busy, not broken: a client should come back shortly, not give up.
        return QueueFull(
            f"every deployment of {name!r} is busy ({reasons})", headers={"Retry-After": "1"}
        )
    return ProviderUnavailable(f"no deployment can serve {name!r} now ({reasons})")


def _meaning(strategy: str) -> str:
    try:
        return RouterCore.score_meaning(_base_strategy(strategy))
    except HybridfastError:  # a plan from another router ("in-order", ...)
        return ""


def _base_strategy(strategy: str) -> str:
    return strategy.split(" ", 1)[0] or "balanced"


def _models_by_id(config: Config) -> dict[str, ModelConfig]:
    """The config entry behind each deployment id (`<name>#<n>`, as `build_deployments`)."""
    seen: Counter[str] = Counter()
    out = {}
    for m in config.models:
        out[f"{m.name}#{seen[m.name]}"] = m
        seen[m.name] += 1
    return out


def _route_spec(name: str, r: Any) -> RouteSpec:
    return RouteSpec(
        name,
        r.strategy,
        list(r.candidates),
        weights=None if r.weights is None else [float(w) for w in r.weights],
        min_quality=r.min_quality,
        max_cost=None if r.max_cost_usd is None else parse_usd(repr(float(r.max_cost_usd))),
        balance=(r.balance.cost, r.balance.latency, r.balance.quality),
        downgrade_on_budget=r.downgrade_on_budget,
    )


def build_router(config: Config, deployments: list[Deployment]) -> NativeRouter:
    return NativeRouter(config, deployments)


def _per_mtok(picos_per_token: int) -> str:
    return format_usd(picos_per_token * 1_000_000)


def describe_plan(plan: RoutePlan) -> str:
    """A human-readable account of a routing decision, for `route --explain`: the
    strategy and arm, each candidate in order with its score, and what was dropped and why."""
    route = getattr(plan, "route", "")
    meaning = getattr(plan, "score_meaning", "") or _meaning(plan.strategy)
    probe = getattr(plan, "probe", None)
    head = f"route {route!r}: " if route else ""
    lines = [f"{head}strategy {plan.strategy}" + (f", arm {plan.arm!r}" if plan.arm else "")]
    if meaning:
        lines.append(f"scores: {meaning}")
    if plan.deployments:
        lines.append("try in this order:")
        rows = []
        for i, d in enumerate(plan.deployments):
            score = plan.scores.get(d.id)
            rows.append(
                [
                    f"{i + 1}.",
                    d.id,
                    f"{d.provider}/{d.model}",
                    "local" if d.local else "cloud",
                    f"quality {d.quality:g}",
                    f"${_per_mtok(d.price.input)}/${_per_mtok(d.price.output)} per Mtok",
                    "" if score is None else f"score {score:.6g}",
                    "[probe: circuit half-open]" if d.id == probe else "",
                ]
            )
        widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
        for row in rows:
            cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=True)]
            lines.append(("  " + "  ".join(cells)).rstrip())
    else:
        lines.append("nothing can serve this request")
    if plan.dropped:
        lines.append("dropped:")
        lines += [f"  - {dep}: {why}" for dep, why in plan.dropped]
    return "\n".join(lines)
