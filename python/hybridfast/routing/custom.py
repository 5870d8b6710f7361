"""Custom routers: Python classes that order a route's candidates themselves.

A route with `strategy: custom` and `router: NAME` (an entry point in the group
`hybridfast.routers`) or `router: "package.module:Class"` is planned in two steps: the
native core drops what cannot serve the request (capabilities, context window, open
circuits, saturation, `min_quality`, budget) and orders the rest by the balanced score;
then the class's `order` method receives those candidates, with their live stats, and
returns them in the order to try. It may leave some out; it cannot add ones the core
dropped. The class is built once at start-up with the route's `options` as keyword
arguments.

    class PreferShortPrompts:
        def __init__(self, threshold: int = 2000) -> None:
            self.threshold = threshold

        def order(self, route, candidates, features, caller):
            small = features.input_tokens < self.threshold
            return sorted(candidates, key=lambda c: c.deployment.local != small)

`order` runs on the event loop for every request of the route: keep it to microseconds.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

from hybridfast.errors import ConfigError
from hybridfast.types import Caller, Deployment, RequestFeatures

ENTRY_POINT_GROUP = "hybridfast.routers"


@dataclass(frozen=True, slots=True)
class Candidate:
    """A deployment that passed the core's filters, as a custom router sees it."""

    deployment: Deployment
    # The balanced penalty the core gave it (lower is better); candidates arrive in its order.
    score: float
    # Expected cost of this request there, in picodollars.
    expected_cost: int
    # Live state: in_flight, latency_s, ttft_s, tokens_per_s (None until measured),
    # error_rate, window_requests, consecutive_failures, circuit, retry_in_s, ...
    stats: dict[str, Any]

    @property
    def id(self) -> str:
        return self.deployment.id


@runtime_checkable
class CustomRouter(Protocol):
    def order(
        self,
        route: str,
        candidates: Sequence[Candidate],
        features: RequestFeatures,
        caller: Caller,
    ) -> Sequence[Candidate | Deployment | str]:
        """The candidates to try, best first (as candidates, deployments or ids)."""
        ...


def load_custom_router(spec: str, options: dict[str, Any], where: str) -> CustomRouter:
    """Builds the router named by `spec` (entry-point name or `module:Class`); a
    `ConfigError` naming `where` (the config key path) if it cannot."""
    try:
        if ":" in spec:
            module_name, _, attr = spec.partition(":")
            factory: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                factory = getattr(factory, part)
        else:
            found = entry_points(group=ENTRY_POINT_GROUP, name=spec)
            if not found:
                known = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
                raise ConfigError(
                    f"{where}: no router {spec!r} in the entry-point group "
                    f"{ENTRY_POINT_GROUP!r} (installed: {', '.join(known) or 'none'})",
                    hint="name an installed entry point or a dotted path `module:Class`",
                )
            factory = next(iter(found)).load()
        router = factory(**options)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"{where}: cannot load the custom router {spec!r}: {type(exc).__name__}: {exc}",
            hint="the router must be importable and accept the route's `options`",
        ) from None
    if not callable(getattr(router, "order", None)):
        raise ConfigError(
            f"{where}: the custom router {spec!r} has no `order` method",
            hint="see the README's Routing section for the interface",
        )
    return router  # type: ignore[no-any-return]
